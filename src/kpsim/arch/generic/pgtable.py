"""The generic page-table entry helpers (``include/linux/pgtable.h``), over the arch's
:meth:`read_entry` (``READ_ONCE(*ptep)``), and :meth:`pt_store`: one kpkeys-guarded
store through the table page's kernel alias, MMU-checked (the ``kpkeys_hardened_pgtables``
guard around ``WRITE_ONCE`` that the series puts in every ``set_p?d``).

Kept here as Linux keeps them generic: ``pud_offset``/``pmd_offset``/
``pte_offset_kernel`` (one level down, over the arch's ``next_offset``), ``p?d_none``,
``set_pte``..``set_pgd`` as plain guarded stores, ``ptep_get_and_clear``,
``ptep_test_and_clear_young`` (clears the arch's accessed bit, :attr:`PAGE_ACCESSED`:
arm64 ``PTE_AF``, x86 ``_PAGE_ACCESSED``), ``ptep_set_access_flags`` (arm64's
``__ptep_set_access_flags`` early exit), ``pmdp_establish``; the
``kpkeys_hardened_pgtables`` guard condition with the series' batching rule (spec §4.9),
and the batched table write (``set_ptes`` loops) whose per-entry pkey-register writes are
counted by the arch (:meth:`count_guard_switches`: POR_EL1 writes and ISBs on arm64,
WRMSRs on x86).

Reads use the physical address directly (a load from a table page can never fault:
the page-table pkey is readable in every context).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.arch.generic.base import ArchBase
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_REG_INVAL


@mypyc_attr(native_class=False)  # see ArchBase
class GenericPgtableMixin(ArchBase):
    #: the accessed ("young") bit of a leaf entry
    PAGE_ACCESSED = 0
    #: ``PAGE_KERNEL``: a kernel data leaf's protection bits
    PAGE_KERNEL = 0

    # -- provided by the arch ----------------------------------------------------------
    def read_entry(self, ptr: int) -> int:
        raise NotImplementedError

    def next_offset(self, ptr: int, addr: int, level: int) -> int:
        raise NotImplementedError

    def table_va(self, table_pa: int) -> int:
        raise NotImplementedError

    def count_guard_switches(self, cpu: Any, n: int) -> None:
        """Account ``n`` guarded entry writes' register switches (enter and restore)
        that a batched store stands for but did not execute."""
        raise NotImplementedError

    # -- reads -----------------------------------------------------------------------
    def pud_offset(self, p4dp: int, addr: int) -> int:
        return self.next_offset(p4dp, addr, 1)

    def pmd_offset(self, pudp: int, addr: int) -> int:
        return self.next_offset(pudp, addr, 2)

    def pte_offset_kernel(self, pmdp: int, addr: int) -> int:
        return self.next_offset(pmdp, addr, 3)

    @staticmethod
    def pxd_none(v: int) -> bool:
        return v == 0

    def read_table(self, table_pa: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """All 512 entries of a table (a read-only view of the frame)."""
        return self.k.mem.frame_ro(table_pa >> 12)

    # -- the guard ---------------------------------------------------------------------
    def _guard_needed(self) -> bool:
        """``kpkeys_hardened_pgtables`` guard condition, with the series' batching rule:
        v4 never switches while ``TIF_LAZY_MMU`` is set, v5-v8 still switch in interrupt
        context, enter-leave always enters (and skips the write where the register
        already grants the context)."""
        if not self.hardened_pgtables:
            return False
        if not self.batching or not self.guard_tif:
            return True
        if self.guard_irq and self.in_interrupt():
            return True
        return not self.current().tif_lazy_mmu

    def _store_guarded(self, cpu: Any) -> bool:
        """Whether a store on ``cpu`` now enters ``KPKEYS_CTX_PGTABLES`` around it."""
        return self._guard_needed()

    def _pt_stored(self, n: int) -> None:
        """Count ``n`` page-table entry writes; run the interrupt injector, if any."""
        self.k.counters["pte_write"] += n
        hook = self.irq_hook
        if hook is not None:
            hook()

    def pt_store(self, ptr: int, value: int) -> None:
        """One guarded page-table store (the body of every write helper): enter
        ``KPKEYS_CTX_PGTABLES``, store through the table page's kernel alias on the
        current CPU (MMU-checked), restore; with ``kpsim explore``'s points around the
        store when an explorer is attached. An arch may override it with a faster
        equivalent for the common case."""
        cpu = self.system.cpus[self.cpu_id]
        hook = self.explore_hook
        guarded = self._store_guarded(cpu)
        saved = KPKEYS_PKEY_REG_INVAL
        if guarded:
            saved = self.arch_kpkeys_set_context(KPKEYS_CTX_PGTABLES)
            self.k.counters["kpkeys_guard_entries"] += 1
        try:
            if hook is not None:
                hook("store:before")
            cpu.store(ptr, value)
            if hook is not None:
                hook("store:after")
        finally:
            if guarded:
                self.arch_kpkeys_restore_pkey_reg(saved)
        self._pt_stored(1)

    def _store_table_explored(self, va: int, index: Any, values: Any) -> int:
        """``store_table`` with ``kpsim explore``'s points before and after."""
        hook = self.explore_hook
        assert hook is not None
        hook("store:before")
        n = int(self.system.cpus[self.cpu_id].store_table(va, index, values))
        hook("store:after")
        return n

    def pt_store_batch(self, table_pa: int, index: Any, values: Any) -> int:
        """Write many entries of one table page (vectorised ``set_ptes``/``clear`` loop).

        Without batching each entry is its own guarded write in Linux: the batch does
        one real guarded store of the whole page (one permission check, as each
        entry's check would be identical) and accounts the remaining n-1 switches
        arithmetically, so the counters match an entry-by-entry loop.
        """
        cpu = self.system.cpus[self.cpu_id]
        va = self.table_va(table_pa)
        store = cpu.store_table if self.explore_hook is None else self._store_table_explored
        if self._guard_needed():
            saved = self.arch_kpkeys_set_context(KPKEYS_CTX_PGTABLES)
            try:
                n = store(va, index, values)
            finally:
                self.arch_kpkeys_restore_pkey_reg(saved)
            if saved != KPKEYS_PKEY_REG_INVAL:  # each entry's guard would switch too
                self.count_guard_switches(cpu, n - 1)
            else:  # each entry's guard would skip too (the first one counted already)
                self.k.counters["kpkeys_enter_skipped"] += n - 1
            self.k.counters["kpkeys_guard_entries"] += n
        else:
            n = store(va, index, values)
        self._pt_stored(n)
        return n

    # -- write helpers by kernel name ----------------------------------------------------
    def set_pte(self, ptep: int, pte: int) -> None:
        self.pt_store(ptep, pte)

    def set_pmd(self, pmdp: int, pmd: int) -> None:
        self.pt_store(pmdp, pmd)

    def set_pud(self, pudp: int, pud: int) -> None:
        self.pt_store(pudp, pud)

    def set_p4d(self, p4dp: int, p4d: int) -> None:
        self.pt_store(p4dp, p4d)

    def set_pgd(self, pgdp: int, pgd: int) -> None:
        self.pt_store(pgdp, pgd)

    def ptep_get_and_clear(self, ptep: int) -> int:
        old = self.read_entry(ptep)
        self.pt_store(ptep, 0)
        return old

    def ptep_test_and_clear_young(self, ptep: int) -> bool:
        """Clear the accessed bit if set; whether it was."""
        old = self.read_entry(ptep)
        young = self.PAGE_ACCESSED
        if old & young:
            self.pt_store(ptep, old & ~young)
            return True
        return False

    def ptep_set_access_flags(self, ptep: int, entry: int) -> bool:
        """``__ptep_set_access_flags``: early exit if unchanged, otherwise a guarded write."""
        old = self.read_entry(ptep)
        if old == entry:
            return False
        self.pt_store(ptep, entry)
        return True

    def pmdp_establish(self, pmdp: int, pmd: int) -> int:
        old = self.read_entry(pmdp)
        self.pt_store(pmdp, pmd)
        return old

    def mk_kernel_ptes(self, pfns: Any) -> Any:
        """``pfn_pte(pfn, PAGE_KERNEL)`` for an array of pfns."""
        arr = np.asarray(pfns, dtype=np.uint64)
        return (arr << np.uint64(12)) | np.uint64(self.PAGE_KERNEL)
