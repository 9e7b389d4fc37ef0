"""x86 kernel page-table entry helpers and the (kpkeys-guarded) write helpers.

Models ``arch/x86/include/asm/pgtable_types.h`` (``_PAGE_*``, ``__PAGE_KERNEL*``,
``_KERNPG_TABLE``, ``_PAGE_TABLE``), ``pgtable.h``/``pgtable_64.h`` (``*_offset``,
``*_leaf``, ``set_pte``, ``set_pmd``, ``set_pud``, ``set_pgd``: plain stores with
4-level paging, ``native_set_*``). Levels are Linux's: 0 PGD (the P4D is folded), 1 PUD,
2 PMD, 3 PTE; the hardware's PML4, PDPT, PD and PT.

Every write is a store through the direct-map alias of the table page (the PGD's through
the kernel-image alias ``swapper_pg_dir``/``init_top_pgt``, which is what
``pgd_offset_k`` gives), made by the current simulated CPU and checked by its MMU
against the leaf's protection key and IA32_PKRS. With the page-table feature on, each
helper enters ``KPKEYS_CTX_PGTABLES`` around the write (WRMSR to IA32_PKRS before and
after; the arch-neutral helpers are :mod:`kpsim.arch.generic.pgtable`'s, with
``_PAGE_ACCESSED`` as the young bit), unless the task is in a batched lazy-MMU section
and not in interrupt context: the arm64 series' guard rule, applied unchanged (there is
no x86 port to follow).

Reads use the physical address directly (key 1 is readable in every context).
"""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.pgtable import GenericPgtableMixin
from kpsim.arch.x86.base import X86Base
from kpsim.arch.x86.memory import PAGE_OFFSET, START_KERNEL_MAP
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.cpu import X86Cpu

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


@mypyc_attr(native_class=False)  # see ArchBase
class PgtableMixin(GenericPgtableMixin, X86Base):
    PAGE_ACCESSED = e.A
    PAGE_KERNEL = PAGE_KERNEL

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

    # -- the guard (its condition: GenericPgtableMixin._guard_needed) -----------------
    def _guard_needed(self) -> bool:
        """The generic guard condition, on CPUs with PKS enabled (CR4.PKS)."""
        return GenericPgtableMixin._guard_needed(self) and self.system_supports_poe()

    def count_guard_switches(self, cpu: X86Cpu, n: int) -> None:
        """``n`` guards' WRMSRs to IA32_PKRS (enter and restore each; no barrier)."""
        cpu.pkrs_writes += 2 * n

    def pt_store_each(self, table_pa: int, index: Any, values: Any) -> int:
        """``len(index)`` separate :meth:`pt_store` calls to one table page, as one batch."""
        return self.pt_store_batch(table_pa, index, values)

    # -- write helpers by kernel name (the generic ones: GenericPgtableMixin) -----------
    def ptep_set_wrprotect(self, ptep: int) -> None:
        self.pt_store(ptep, self.read_entry(ptep) & ~e.RW)
