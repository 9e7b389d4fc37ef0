"""x86 user page-table entries: ``protection_map``, ``pfn_pte`` and the ``pte_*`` helpers.

Models ``arch/x86/mm/pgprot.c`` (``protection_map``: private writable mappings are
read-only until written, ``PAGE_COPY``), ``arch/x86/include/asm/pgtable.h`` and
``pgtable_types.h``: RW is ``pte_write``, D ``pte_dirty`` (set by hardware on a write,
and by ``pte_mkdirty``), A ``pte_young``; ``PROT_NONE`` entries are P=0 with
``_PAGE_PROTNONE`` (the G bit's position); a THP is a PMD with PSE; ``pte_modify`` keeps
``_PAGE_CHG_MASK`` (the pfn, caching, A, D) and takes the rest from the new protection.
User tables are linked with ``_PAGE_TABLE`` (U/S=1); kernel tables in kpsim carry
``_KERNPG_TABLE`` (U/S=0), so :meth:`pmd_table` tells a user table entry from the
kernel half a user PGD shares (docs/fidelity.md).

``pgd_ctor`` (``pgd_alloc``): a user PGD gets the kernel half of ``swapper_pg_dir``
(``clone_pgd_range`` of ``KERNEL_PGD_PTRS`` entries). kpsim copies it when the mm is
first loaded into CR3 (``switch_mm_irqs_off``), since generic ``pgd_alloc`` has no arch
hook in the model; the copy is a guarded store into the (keyed) PGD page.

Left out: soft-dirty, shadow-stack ``_PAGE_SAVED_DIRTY``, ``_PAGE_SPECIAL``/devmap, PAT
caching modes, memory protection keys for user space in VMAs (pkey_mprotect).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.arch.x86.base import X86Base
from kpsim.arch.x86.pgtable import PAGE_TABLE, PTE_PFN_MASK, pfn_mask, small_prot
from kpsim.hw.x86 import pte as e

PROTNONE = e.G  # _PAGE_PROTNONE (_PAGE_BIT_PROTNONE = _PAGE_BIT_GLOBAL)
_U = e.US | e.A
PAGE_NONE = PROTNONE | e.A
PAGE_SHARED = e.P | e.RW | _U | e.NX
PAGE_SHARED_EXEC = e.P | e.RW | _U
PAGE_COPY = e.P | _U | e.NX
PAGE_COPY_EXEC = e.P | _U
PAGE_READONLY = e.P | _U | e.NX
PAGE_READONLY_EXEC = e.P | _U
PROTECTION_MAP = (
    PAGE_NONE,
    PAGE_READONLY,
    PAGE_COPY,
    PAGE_COPY,
    PAGE_READONLY_EXEC,
    PAGE_READONLY_EXEC,
    PAGE_COPY_EXEC,
    PAGE_COPY_EXEC,
    PAGE_NONE,
    PAGE_READONLY,
    PAGE_SHARED,
    PAGE_SHARED,
    PAGE_READONLY_EXEC,
    PAGE_READONLY_EXEC,
    PAGE_SHARED_EXEC,
    PAGE_SHARED_EXEC,
)
#: _PAGE_CHG_MASK: what pte_modify keeps
CHG_MASK = PTE_PFN_MASK | e.PCD | e.PWT | e.A | e.D | e.PS
KERNEL_PGD_BOUNDARY = 256  # pgd_index(PAGE_OFFSET) rounded: the kernel half
#: user space ends below the non-canonical hole (``TASK_SIZE_MAX``)
TASK_SIZE = (1 << 47) - 4096

_u = np.uint64
_PRESENT = _u(e.P | PROTNONE)
_PFN = _u(PTE_PFN_MASK)
_RW = _u(e.RW)
_A = _u(e.A)


@mypyc_attr(native_class=False)  # see ArchBase
class PgtableUserMixin(X86Base):
    task_size = TASK_SIZE

    @staticmethod
    def vm_get_page_prot(read: bool, write: bool, exec_: bool, shared: bool) -> int:
        return PROTECTION_MAP[int(read) | int(write) << 1 | int(exec_) << 2 | int(shared) << 3]

    @staticmethod
    def pfn_pte(pfn: int, prot: int) -> int:
        return ((pfn << 12) & PTE_PFN_MASK) | prot

    @staticmethod
    def pfn_pmd_huge(pfn: int, prot: int) -> int:
        """``pmd_mkhuge(pfn_pmd(pfn, prot))``: PSE, PAT moved to bit 12."""
        pat = e.PAT_LARGE if prot & e.PAT_4K else 0
        return ((pfn << 12) & pfn_mask(2)) | (prot & ~e.PAT_4K) | pat | e.PS

    @staticmethod
    def user_table_desc(table_pa: int) -> int:
        """``pmd_populate``/``pud_populate``/``pgd_populate``: ``_PAGE_TABLE``."""
        return (table_pa & PTE_PFN_MASK) | PAGE_TABLE

    @staticmethod
    def table_desc_pa(v: int) -> int:
        return v & PTE_PFN_MASK

    @staticmethod
    def pte_present(v: int) -> bool:
        return bool(v & (e.P | PROTNONE))

    @staticmethod
    def pte_pfn(v: int) -> int:
        return (v & PTE_PFN_MASK) >> 12

    @staticmethod
    def pte_write(v: int) -> bool:
        return bool(v & e.RW)

    @staticmethod
    def pte_dirty(v: int) -> bool:
        return bool(v & e.D)

    @staticmethod
    def pte_mkwrite(v: int) -> int:
        return v | e.RW

    @staticmethod
    def pte_mkdirty(v: int) -> int:
        return v | e.D

    @staticmethod
    def pte_wrprotect(v: int) -> int:
        return v & ~e.RW

    @staticmethod
    def pte_mkyoung(v: int) -> int:
        return v | e.A

    @staticmethod
    def pte_modify(v: int, prot: int) -> int:
        return (v & CHG_MASK) | (prot & ~CHG_MASK)

    @staticmethod
    def pmd_trans_huge(v: int) -> bool:
        return bool(v & (e.P | PROTNONE)) and bool(v & e.PS)

    @staticmethod
    def pmd_table(v: int) -> bool:
        """A present user table entry (U/S=1, no PSE): see the module docstring."""
        return bool(v & e.P) and not v & e.PS and bool(v & e.US)

    @staticmethod
    def pmd_to_pte_prot(v: int) -> int:
        return small_prot(v & ~pfn_mask(2))

    # -- vectorised ------------------------------------------------------------------------
    @staticmethod
    def ptes_present(a: Any) -> Any:
        return (a & _PRESENT) != 0

    @staticmethod
    def ptes_pfn(a: Any) -> Any:
        return ((a & _PFN) >> _u(12)).astype(np.int64)

    @staticmethod
    def ptes_write(a: Any) -> Any:
        return (a & _RW) != 0

    @staticmethod
    def ptes_wrprotect(a: Any) -> Any:
        return a & ~_RW

    @staticmethod
    def ptes_mkwrite(a: Any) -> Any:
        return a | _RW

    @staticmethod
    def ptes_mkold(a: Any) -> Any:
        return a & ~_A

    @staticmethod
    def ptes_modify(a: Any, prot: int) -> Any:
        keep = _u(CHG_MASK)
        return (a & keep) | (_u(prot) & ~keep)

    @staticmethod
    def ptes_from_pfns(pfns: Any, prot: int) -> Any:
        return ((pfns.astype(np.uint64) << _u(12)) & _PFN) | _u(prot)

    # -- user access and the user PGD -------------------------------------------------------
    def user_access(self, va: int, write: bool, value: int = 0) -> bool:
        """One user byte load/store (CPL 3) on the current CPU; False if it faulted."""
        return self.system.cpus[self.cpu_id].access_user(va, write, value)

    def pgd_ctor(self, pgd_pa: int) -> None:
        """``pgd_ctor``: copy the kernel half of ``swapper_pg_dir`` into a user PGD
        (once: a PGD whose kernel half is already there is left alone)."""
        if pgd_pa == self.swapper_pg_dir:
            return
        mem = self.k.mem
        kernel = mem.frame_ro(self.swapper_pg_dir >> 12)[KERNEL_PGD_BOUNDARY:]
        mine = mem.frame_ro(pgd_pa >> 12)[KERNEL_PGD_BOUNDARY:]
        if np.array_equal(kernel, mine):
            return
        self.pt_store_batch(pgd_pa, slice(KERNEL_PGD_BOUNDARY, 512), kernel.copy())
        self.k.counters["pgd_ctor"] += 1
