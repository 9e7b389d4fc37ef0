"""arm64 page-table entry helpers and the (kpkeys-guarded) write helpers.

Models ``arch/arm64/include/asm/pgtable.h`` and ``pgtable-prot.h``: ``*_offset``,
``*_none``, ``*_leaf``, protection values, and the helpers that write an entry:
``__set_pte_nosync``/``set_pte``, ``set_pmd``, ``set_pud``, ``set_p4d``, ``set_pgd``,
``ptep_get_and_clear``, ``ptep_set_wrprotect``, ``ptep_test_and_clear_young``,
``ptep_set_access_flags``, ``pmdp_establish`` (the arch-neutral ones in
:mod:`kpsim.arch.generic.pgtable`, with ``PTE_AF`` as the young bit and POR_EL1
writes + ISBs as a guard's cost). Every write is a store through the
linear-map alias of the table page, made by the current simulated CPU and checked
by its MMU. With kpkeys_hardened_pgtables on, each helper enters
``KPKEYS_CTX_PGTABLES`` around the write only (the ``kpkeys_hardened_pgtables``
guard), unless the task is in a batched lazy-MMU section and not in interrupt
context (v5/v6 batching, spec §4.9; v4 ignored interrupt context; with the enter/leave
API the guard always enters and writes nothing where POR_EL1 already grants it).

Reads use the physical address directly (a load through the linear map can never
fault on a table page: pkey 1 is readable in every context).
"""

from __future__ import annotations

from typing import Any, Final

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.base import Arm64Base
from kpsim.arch.arm64.kpkeys import (
    arch_kpkeys_restore_pkey_reg,
    por_set_kpkeys_context,
)
from kpsim.arch.arm64.memory import PAGE_OFFSET
from kpsim.arch.generic.pgtable import GenericPgtableMixin
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.cpu import Cpu
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES

# pgtable-prot.h (with PTE_WRITE = PTE_DBM and software PTE_DIRTY)
PROT_DEFAULT = d.AF | d.SH_INNER
PROT_NORMAL = PROT_DEFAULT | d.PXN | d.UXN | d.DBM | d.SW_DIRTY
PAGE_KERNEL = PROT_NORMAL | d.TYPE | d.VALID
PAGE_KERNEL_RO = (PROT_NORMAL & ~d.DBM) | d.AP_RDONLY | d.TYPE | d.VALID
PAGE_KERNEL_ROX = (PAGE_KERNEL_RO & ~d.PXN & ~d.SW_DIRTY) | d.AP_RDONLY
PAGE_KERNEL_EXEC = PAGE_KERNEL & ~d.PXN
PROT_SECT_NORMAL = (PAGE_KERNEL & ~d.TYPE) | d.VALID  # block form of PAGE_KERNEL
PTE_ADDR_MASK = d.OA_MASK


def pgprot_tagged(prot: int) -> int:
    """``pgprot_tagged``: ``prot`` with AttrIndx MT_NORMAL_TAGGED (the linear map's
    memory type; without MTE its MAIR slot reads as plain Normal memory)."""
    return (prot & ~d.ATTRINDX_MASK) | (int(d.MemAttr.NORMAL_TAGGED) << d.ATTRINDX_SHIFT)


#: ``por_set_kpkeys_context(por, KPKEYS_CTX_PGTABLES)`` by ``por`` (a pure function)
_PGTABLES_POR: Final[dict[int, int]] = {}


def sect_prot(prot: int) -> int:
    """Turn a page protection into its block (section) form (``mk_sect_prot``)."""
    return prot & ~d.TYPE


@mypyc_attr(native_class=False)  # see Arm64Base
class PgtableMixin(GenericPgtableMixin, Arm64Base):
    PAGE_ACCESSED = d.AF
    PAGE_KERNEL = PAGE_KERNEL

    # -- reads -----------------------------------------------------------------------
    def entry_pa(self, ptr: int) -> int:
        return self.layout.virt_to_phys(ptr)

    def read_entry(self, ptr: int) -> int:
        """``READ_ONCE(*ptep)`` for a linear-map entry pointer."""
        return self.k.mem.read64(self.layout.virt_to_phys(ptr))

    def table_va(self, table_pa: int) -> int:
        return PAGE_OFFSET + (table_pa - self.layout.memstart_addr)  # phys_to_virt

    def pgd_offset_pgd(self, pgd_pa: int, addr: int) -> int:
        return self.layout.phys_to_virt(pgd_pa) + (((addr >> 39) & 0x1FF) << 3)

    def pgd_offset_k(self, addr: int) -> int:
        return self.pgd_offset_pgd(self.swapper_pg_dir, addr)

    def next_offset(self, ptr: int, addr: int, level: int) -> int:
        """``pud_offset``/``pmd_offset``/``pte_offset_kernel``: entry pointer one level down."""
        table = self.read_entry(ptr) & d.OA_MASK
        return self.layout.phys_to_virt(table) + (((addr >> d.LEVEL_SHIFT[level]) & 0x1FF) << 3)

    @staticmethod
    def pxd_table(v: int, level: int) -> bool:
        """``p?d_table``: a valid entry at ``level`` (0-2) that points at a table."""
        return level < 3 and d.kind(v, level) is d.Kind.TABLE

    @staticmethod
    def pxd_leaf(v: int, level: int) -> bool:
        """``p?d_leaf`` (a block), or a valid page descriptor at level 3."""
        return d.is_leaf(v, level)

    # -- the guard (its condition: GenericPgtableMixin._guard_needed) -----------------
    def pt_store(self, ptr: int, value: int) -> None:
        """One guarded page-table store (the body of every write helper): the generic
        :meth:`GenericPgtableMixin.pt_store` when an explorer is attached, else the
        same steps with POR_EL1 switched in one ``store_with_por_el1``."""
        if self.explore_hook is not None:
            GenericPgtableMixin.pt_store(self, ptr, value)
            return
        cpu_id = self.cpu_id  # (each attribute of the arch object is a dict look-up)
        cpu = self.system.cpus[cpu_id]
        counters = self.k.counters
        guard = self.hardened_pgtables
        if guard and self.batching and self.guard_tif:  # _guard_needed(), inlined
            pc = self.percpu[cpu_id]
            guard = (self.guard_irq and pc.irq_depth > 0) or not pc.current.tif_lazy_mmu
        if guard and cpu.poe:  # arch_kpkeys_set_context, the store, restore_pkey_reg
            prev = cpu.por_el1
            por = _PGTABLES_POR.get(prev)
            if por is None:
                if len(_PGTABLES_POR) > 4096:
                    _PGTABLES_POR.clear()
                por = _PGTABLES_POR[prev] = por_set_kpkeys_context(prev, KPKEYS_CTX_PGTABLES)
            counters["kpkeys_guard_entries"] += 1
            if por == prev and self.skip_unchanged:  # enter_context: nothing to write
                counters["kpkeys_enter_skipped"] += 1
                cpu.store(ptr, value)
            else:
                cpu.store_with_por_el1(ptr, value, por)
        elif guard:
            saved = self.arch_kpkeys_set_context(KPKEYS_CTX_PGTABLES)
            counters["kpkeys_guard_entries"] += 1
            try:
                cpu.store(ptr, value)
            finally:
                arch_kpkeys_restore_pkey_reg(cpu, saved)
        else:
            cpu.store(ptr, value)
        counters["pte_write"] += 1
        hook = self.irq_hook
        if hook is not None:
            hook()

    def _store_guarded(self, cpu: Cpu) -> bool:
        return self._guard_needed() and cpu.poe

    def count_guard_switches(self, cpu: Cpu, n: int) -> None:
        """``n`` guards' POR_EL1 writes and ISBs (enter and restore each)."""
        cpu.por_writes += 2 * n
        cpu.isbs += 2 * n

    def pt_store_each(self, table_pa: int, index: Any, values: Any) -> int:
        """``len(index)`` separate :meth:`pt_store` calls to entries of one table page
        (e.g. one per page fault), done as one batch: the same stores, guard switches
        and TLB lookups are counted (each store of the loop would hit the entry the
        first one used). Only for callers that checked no interrupt can come in
        between (no ``irq_hook``), since the stores all happen at once."""
        n = self.pt_store_batch(table_pa, index, values)
        self.cpu.tlb_hits += n - 1
        return n

    # -- write helpers by kernel name (the generic ones: GenericPgtableMixin) -----------
    def ptep_set_wrprotect(self, ptep: int) -> None:
        """Clear PTE_WRITE (DBM) and set PTE_RDONLY, keeping the dirty state in software."""
        old = self.read_entry(ptep)
        new = (old & ~d.DBM) | d.AP_RDONLY
        if not old & d.AP_RDONLY:
            new |= d.SW_DIRTY
        self.pt_store(ptep, new)
