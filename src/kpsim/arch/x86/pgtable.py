"""x86 kernel page-table entry helpers and the (kpkeys-guarded) write helpers.

Models ``arch/x86/include/asm/pgtable_types.h`` (``_PAGE_*``, ``__PAGE_KERNEL*``,
``_KERNPG_TABLE``, ``_PAGE_TABLE``), ``pgtable.h``/``pgtable_64.h`` (``*_offset``,
``*_leaf``, ``set_pte``, ``set_pmd``, ``set_pud``, ``set_pgd``: plain stores with
4-level paging, ``native_set_*``). Levels are Linux's: 0 PGD (the P4D is folded), 1 PUD,
2 PMD, 3 PTE; the hardware's PML4, PDPT, PD and PT.

Every write is a store through the direct-map alias of the table page (the PGD's
through the kernel-image alias ``swapper_pg_dir``/``init_top_pgt``, which is what
``pgd_offset_k`` gives), made by the current simulated CPU and checked by its MMU
against the leaf's protection key and IA32_PKRS. With the page-table feature on, each
helper enters ``KPKEYS_CTX_PGTABLES`` around the write (WRMSR to IA32_PKRS before and
after), unless the task is in a batched lazy-MMU section and not in interrupt context:
the arm64 series' guard rule, applied unchanged (there is no x86 port to follow).

Reads use the physical address directly (key 1 is readable in every context).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kpsim.arch.x86.base import X86Base
from kpsim.arch.x86.memory import PAGE_OFFSET, START_KERNEL_MAP
from kpsim.hw.x86 import pte as e
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_REG_INVAL

# pgtable_types.h (PTI off, so _PAGE_GLOBAL stays in __default_kernel_pte_mask)
PTE_PFN_MASK = e.addr_mask(52)
PAGE_KERNEL = e.P | e.RW | e.A | e.D | e.NX | e.G
PAGE_KERNEL_RO = e.P | e.A | e.D | e.NX | e.G
PAGE_KERNEL_ROX = e.P | e.A | e.D | e.G
PAGE_KERNEL_EXEC = e.P | e.RW | e.A | e.D | e.G
KERNPG_TABLE = e.P | e.RW | e.A | e.D  # _KERNPG_TABLE
PAGE_TABLE = KERNPG_TABLE | e.US  # _PAGE_TABLE
#: VA shift of an entry at each Linux level (0 PGD .. 3 PTE)
LEVEL_SHIFT = (39, 30, 21, 12)
#: hardware level (4 PML4 .. 1 PT) of each Linux level
HW_LEVEL = (4, 3, 2, 1)
LEVEL_NAME = ("pgd", "pud", "pmd", "pte")


def level_size(level: int) -> int:
    return 1 << LEVEL_SHIFT[level]


def pfn_mask(level: int) -> int:
    """The address bits of a leaf at ``level`` (``PHYSICAL_PUD/PMD/PAGE_MASK``)."""
    return PTE_PFN_MASK & ~(level_size(level) - 1)


def large_prot(prot: int) -> int:
    """``pgprot_4k_2_large``: a 4K PTE's protection as a large leaf's (PAT moves from
    bit 7 to bit 12, PSE set)."""
    pat = e.PAT_LARGE if prot & e.PAT_4K else 0
    return (prot & ~e.PAT_4K) | pat | e.PS


def small_prot(prot: int) -> int:
    """``pgprot_large_2_4k``: a large leaf's protection as a 4K PTE's."""
    pat = e.PAT_4K if prot & e.PAT_LARGE else 0
    return (prot & ~(e.PS | e.PAT_LARGE)) | pat


class PgtableMixin(X86Base):
    # -- reads -----------------------------------------------------------------------
    def entry_pa(self, ptr: int) -> int:
        """``__pa`` of an entry pointer (direct map or kernel image)."""
        return ptr - START_KERNEL_MAP if ptr >= START_KERNEL_MAP else ptr - PAGE_OFFSET

    def read_entry(self, ptr: int) -> int:
        return self.k.mem.read64(self.entry_pa(ptr))

    def table_va(self, table_pa: int) -> int:
        return PAGE_OFFSET + table_pa

    def pgd_offset_pgd(self, pgd_pa: int, addr: int) -> int:
        return PAGE_OFFSET + pgd_pa + (((addr >> 39) & 0x1FF) << 3)

    def pgd_offset_k(self, addr: int) -> int:
        """``pgd_offset_k``: ``init_mm.pgd`` is ``swapper_pg_dir``, an image symbol."""
        return START_KERNEL_MAP + self.swapper_pg_dir + (((addr >> 39) & 0x1FF) << 3)

    def next_offset(self, ptr: int, addr: int, level: int) -> int:
        """``pud_offset``/``pmd_offset``/``pte_offset_kernel``: one level down (``__va``)."""
        table = self.read_entry(ptr) & PTE_PFN_MASK
        return PAGE_OFFSET + table + (((addr >> LEVEL_SHIFT[level]) & 0x1FF) << 3)

    def pud_offset(self, p4dp: int, addr: int) -> int:
        return self.next_offset(p4dp, addr, 1)

    def pmd_offset(self, pudp: int, addr: int) -> int:
        return self.next_offset(pudp, addr, 2)

    def pte_offset_kernel(self, pmdp: int, addr: int) -> int:
        return self.next_offset(pmdp, addr, 3)

    @staticmethod
    def pxd_none(v: int) -> bool:
        return v == 0

    @staticmethod
    def pxd_table(v: int, level: int) -> bool:
        """A present entry that points at a table (not a leaf)."""
        return level < 3 and bool(v & e.P) and not (level in (1, 2) and v & e.PS)

    @staticmethod
    def pxd_leaf(v: int, level: int) -> bool:
        """``pud_leaf``/``pmd_leaf`` (PSE set), or a present PTE."""
        if level == 3:
            return bool(v & e.P)
        return level in (1, 2) and bool(v & e.P) and bool(v & e.PS)

    def read_table(self, table_pa: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """All 512 entries of a table (a read-only view of the frame)."""
        return self.k.mem.frame_ro(table_pa >> 12)

    # -- the guard ---------------------------------------------------------------------
    def _guard_needed(self) -> bool:
        """The ``kpkeys_hardened_pgtables`` guard condition with the series' batching rule."""
        if not self.hardened_pgtables:
            return False
        if not self.batching or not self.guard_tif:
            return True
        if self.guard_irq and self.in_interrupt():
            return True
        return not self.current().tif_lazy_mmu

    def pt_store(self, ptr: int, value: int) -> None:
        """One guarded page-table store (the body of every write helper)."""
        cpu = self.system.cpus[self.cpu_id]
        if self._guard_needed() and self.system_supports_poe():
            saved = self.arch_kpkeys_set_context(KPKEYS_CTX_PGTABLES)
            self.k.counters["kpkeys_guard_entries"] += 1
            try:
                cpu.store(ptr, value)
            finally:
                self.arch_kpkeys_restore_pkey_reg(saved)
        else:
            cpu.store(ptr, value)
        self.k.counters["pte_write"] += 1
        hook = self.irq_hook
        if hook is not None:
            hook()

    def pt_store_batch(self, table_pa: int, index: Any, values: Any) -> int:
        """Write many entries of one table page (a ``set_ptes``/clear loop).

        Outside a batched section each entry is its own guarded write in Linux: the
        batch makes one real guarded store of the page (one permission check, each
        entry's would be the same) and counts the other n-1 entries' two WRMSRs each."""
        cpu = self.system.cpus[self.cpu_id]
        va = PAGE_OFFSET + table_pa
        if self._guard_needed() and self.system_supports_poe():
            saved = self.arch_kpkeys_set_context(KPKEYS_CTX_PGTABLES)
            try:
                n = cpu.store_table(va, index, values)
            finally:
                self.arch_kpkeys_restore_pkey_reg(saved)
            if saved != KPKEYS_PKEY_REG_INVAL:
                cpu.pkrs_writes += 2 * (n - 1)
            else:
                self.k.counters["kpkeys_enter_skipped"] += n - 1
            self.k.counters["kpkeys_guard_entries"] += n
        else:
            n = cpu.store_table(va, index, values)
        self.k.counters["pte_write"] += n
        hook = self.irq_hook
        if hook is not None:
            hook()
        return n

    def pt_store_each(self, table_pa: int, index: Any, values: Any) -> int:
        """``len(index)`` separate :meth:`pt_store` calls to one table page, as one batch."""
        return self.pt_store_batch(table_pa, index, values)

    # -- write helpers by kernel name -------------------------------------------------------
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

    def ptep_set_wrprotect(self, ptep: int) -> None:
        self.pt_store(ptep, self.read_entry(ptep) & ~e.RW)

    def ptep_test_and_clear_young(self, ptep: int) -> bool:
        old = self.read_entry(ptep)
        if old & e.A:
            self.pt_store(ptep, old & ~e.A)
            return True
        return False

    def ptep_set_access_flags(self, ptep: int, entry: int) -> bool:
        old = self.read_entry(ptep)
        if old == entry:
            return False
        self.pt_store(ptep, entry)
        return True

    def pmdp_establish(self, pmdp: int, pmd: int) -> int:
        old = self.read_entry(pmdp)
        self.pt_store(pmdp, pmd)
        return old
