"""arm64 user page-table entries: ``protection_map``, ``pfn_pte`` and the ``pte_*`` bit helpers.

Models the user half of ``arch/arm64/include/asm/pgtable-prot.h`` and ``pgtable.h``
(Linux 6.10+ encoding): user leaves carry AP[1] (``PTE_USER``), nG and PXN; UXN unless
the VMA is executable; read-only is ``PTE_RDONLY``; writable is ``PTE_WRITE`` (DBM),
and a writable entry loses ``PTE_RDONLY`` once dirty (``pte_mkdirty``); ``PROT_NONE``
entries are "present invalid" (valid bit clear, ``PTE_PRESENT_INVALID`` = nG set).
A PMD-mapped THP is a level-2 block. Vectorised forms (``ptes_*``) work on a whole
table (a numpy ``uint64`` array) at once for the bulk paths.

Also the user access of a task at EL0 (``user_access``), through the current CPU's MMU.

Left out: BTI guarded pages (PTE_GP), MTE, contiguous user mappings (contPTE folding),
hardware Access-flag/dirty management (TCR_EL1.HA/HD are 0 in the model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.base import Arm64Base
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.mmu import walk_to_pte_table

PTE_PRESENT_INVALID = d.NG  # 6.10+: reuses nG for "present but invalid" (PROT_NONE)
_DEFAULT = d.TYPE | d.VALID | d.AF | d.SH_INNER  # _PAGE_DEFAULT, MT_NORMAL
PAGE_NONE = (_DEFAULT & ~d.VALID) | PTE_PRESENT_INVALID | d.AP_RDONLY | d.PXN | d.UXN
PAGE_SHARED = _DEFAULT | d.AP_USER | d.AP_RDONLY | d.NG | d.PXN | d.UXN | d.DBM
PAGE_SHARED_EXEC = _DEFAULT | d.AP_USER | d.AP_RDONLY | d.NG | d.PXN | d.DBM
PAGE_READONLY = _DEFAULT | d.AP_USER | d.AP_RDONLY | d.NG | d.PXN | d.UXN
PAGE_READONLY_EXEC = _DEFAULT | d.AP_USER | d.AP_RDONLY | d.NG | d.PXN
PAGE_EXECONLY = _DEFAULT | d.AP_RDONLY | d.NG | d.PXN

# protection_map[VM_READ|VM_WRITE|VM_EXEC (+8 for VM_SHARED)], arch/arm64/mm/mmap.c
PROTECTION_MAP = (
    PAGE_NONE,
    PAGE_READONLY,
    PAGE_READONLY,
    PAGE_READONLY,
    PAGE_EXECONLY,
    PAGE_READONLY_EXEC,
    PAGE_READONLY_EXEC,
    PAGE_READONLY_EXEC,
    PAGE_NONE,
    PAGE_READONLY,
    PAGE_SHARED,
    PAGE_SHARED,
    PAGE_EXECONLY,
    PAGE_READONLY_EXEC,
    PAGE_SHARED_EXEC,
    PAGE_SHARED_EXEC,
)
# pte_modify's mask
_MODIFY_MASK = (
    d.AP_USER
    | d.PXN
    | d.UXN
    | d.AP_RDONLY
    | PTE_PRESENT_INVALID
    | d.VALID
    | d.DBM
    | d.GP
    | d.ATTRINDX_MASK
    | d.POINDEX_MASK
)

_U = np.uint64
_VALID_PI = _U(d.VALID | PTE_PRESENT_INVALID)
_PI = _U(PTE_PRESENT_INVALID)
_V = _U(d.VALID)
_DBM = _U(d.DBM)
_RDONLY = _U(d.AP_RDONLY)
_DIRTY = _U(d.SW_DIRTY)
_AF = _U(d.AF)
_OA = _U(d.OA_MASK)


@mypyc_attr(native_class=False)  # see Arm64Base
class PgtableUserMixin(Arm64Base):
    # -- protections and constructors ----------------------------------------------------
    @staticmethod
    def vm_get_page_prot(read: bool, write: bool, exec_: bool, shared: bool) -> int:
        """``vm_get_page_prot``: the PTE protection of a VMA from its VM_ flags."""
        return PROTECTION_MAP[int(read) | int(write) << 1 | int(exec_) << 2 | int(shared) << 3]

    @staticmethod
    def pfn_pte(pfn: int, prot: int) -> int:
        return (pfn << 12) & d.OA_MASK | prot

    @staticmethod
    def pfn_pmd_huge(pfn: int, prot: int) -> int:
        """``pmd_mkhuge(pfn_pmd(pfn, prot))``: a level-2 block descriptor."""
        return ((pfn << 12) & d.BLOCK_OA_MASK[2] | prot) & ~d.TYPE

    @staticmethod
    def user_table_desc(table_pa: int) -> int:
        """``__pmd_populate(..., PMD_TYPE_TABLE | PMD_TABLE_PXN)`` for a user table."""
        return d.table_desc(table_pa, pxn_table=True)

    @staticmethod
    def table_desc_pa(v: int) -> int:
        return v & d.OA_MASK

    # -- single-entry predicates and modifiers (work for PTEs and huge PMDs) ------------------
    @staticmethod
    def pte_present(v: int) -> bool:
        return bool(v & d.VALID) or (v & (d.VALID | PTE_PRESENT_INVALID)) == PTE_PRESENT_INVALID

    @staticmethod
    def pte_pfn(v: int) -> int:
        return (v & d.OA_MASK) >> 12

    @staticmethod
    def pte_write(v: int) -> bool:
        return bool(v & d.DBM)

    @staticmethod
    def pte_dirty(v: int) -> bool:
        return bool(v & d.SW_DIRTY) or (bool(v & d.DBM) and not v & d.AP_RDONLY)

    @staticmethod
    def pte_mkwrite(v: int) -> int:
        v |= d.DBM
        return v & ~d.AP_RDONLY if v & d.SW_DIRTY else v

    @staticmethod
    def pte_mkdirty(v: int) -> int:
        v |= d.SW_DIRTY
        return v & ~d.AP_RDONLY if v & d.DBM else v

    @staticmethod
    def pte_wrprotect(v: int) -> int:
        if v & d.DBM and not v & d.AP_RDONLY:
            v |= d.SW_DIRTY
        return (v & ~d.DBM) | d.AP_RDONLY

    @staticmethod
    def pte_mkyoung(v: int) -> int:
        return v | d.AF

    @staticmethod
    def pte_modify(v: int, prot: int) -> int:
        if v & d.DBM and not v & d.AP_RDONLY:
            v |= d.SW_DIRTY
        v = (v & ~_MODIFY_MASK) | (prot & _MODIFY_MASK)
        return v & ~d.AP_RDONLY if v & d.DBM and v & d.SW_DIRTY else v

    @staticmethod
    def pmd_trans_huge(v: int) -> bool:
        """A present level-2 block (valid or PROT_NONE), not a table."""
        return not v & d.TYPE and (
            bool(v & d.VALID) or (v & (d.VALID | PTE_PRESENT_INVALID)) == PTE_PRESENT_INVALID
        )

    @staticmethod
    def pmd_table(v: int) -> bool:
        return bool(v & d.VALID) and bool(v & d.TYPE)

    @staticmethod
    def pmd_to_pte_prot(v: int) -> int:
        """The PTE form of a huge PMD's attributes (for ``__split_huge_pmd``)."""
        return (v & ~d.BLOCK_OA_MASK[2]) | d.TYPE

    # -- vectorised forms for a whole table ---------------------------------------------------
    @staticmethod
    def ptes_present(a: Any) -> Any:
        return ((a & _V) != 0) | ((a & _VALID_PI) == _PI)

    @staticmethod
    def ptes_pfn(a: Any) -> Any:
        return ((a & _OA) >> _U(12)).astype(np.int64)

    @staticmethod
    def ptes_write(a: Any) -> Any:
        return (a & _DBM) != 0

    @staticmethod
    def ptes_wrprotect(a: Any) -> Any:
        hw_dirty = ((a & _DBM) != 0) & ((a & _RDONLY) == 0)
        a = np.where(hw_dirty, a | _DIRTY, a)
        return (a & ~_DBM) | _RDONLY

    @staticmethod
    def ptes_mkwrite(a: Any) -> Any:
        a = a | _DBM
        return np.where((a & _DIRTY) != 0, a & ~_RDONLY, a)

    @staticmethod
    def ptes_mkold(a: Any) -> Any:
        return a & ~_AF

    @staticmethod
    def ptes_modify(a: Any, prot: int) -> Any:
        mask = _U(_MODIFY_MASK)
        hw_dirty = ((a & _DBM) != 0) & ((a & _RDONLY) == 0)
        a = np.where(hw_dirty, a | _DIRTY, a)
        a = (a & ~mask) | (_U(prot) & mask)
        wd = ((a & _DBM) != 0) & ((a & _DIRTY) != 0)
        return np.where(wd, a & ~_RDONLY, a)

    @staticmethod
    def ptes_from_pfns(pfns: Any, prot: int) -> Any:
        return ((pfns.astype(np.uint64) << _U(12)) & _OA) | _U(prot)

    # -- user access at EL0 --------------------------------------------------------------------
    def user_access(self, va: int, write: bool, value: int = 0) -> bool:
        """One byte load/store by user code on the current CPU; False if the MMU faulted."""
        return self.system.cpus[self.cpu_id].access_el0(va, write, value)

    # -- batched user faults (kpsim.mm.fault_batch) ----------------------------------------------
    def user_batch_ok(self) -> bool:
        """May a run of user faults be resolved at once? Not with interrupts being
        injected between page-table writes, nor from interrupt context."""
        return self.irq_hook is None and not self.in_interrupt()

    def user_pte_table(self, va: int) -> tuple[int, int] | None:
        """(level-3 table pa, table bits on the path) the current CPU's walk of user
        ``va`` reaches, or None."""
        cpu = self.cpu
        if cpu.ttbr0 is None:
            return None
        return walk_to_pte_table(cpu.mem, cpu.ttbr0, va)

    def user_probe(self, vas: list[int]) -> list[Any] | None:
        """The TLB entry the next EL0 access to each page would hit (None: a miss), or
        None when all miss."""
        return self.cpu.probe_el0(vas)

    def user_leaf_entries(self, descs: Any, strip: int) -> list[Any]:
        """What a walk reaching ``descs`` (level 3, table bits ``strip``) would cache."""
        return self.cpu.leaf_entries(descs, strip)

    def user_allows(self, entry: Any, write: bool) -> bool:
        """Would an EL0 access be allowed by this TLB/leaf entry under POR_EL0?"""
        cpu = self.cpu
        return bool(entry[2] & cpu.por_el0_in_effect_el0[entry[3]] & (4 if write else 1))

    def user_commit(
        self,
        vas: list[int],
        entries: list[Any],
        faulted: int,
        extra: list[list[int]] | None,
        write: bool,
        value: int,
    ) -> None:
        """Account and perform the EL0 accesses of a batch (see ``Cpu.commit_el0``)."""
        self.cpu.commit_el0(vas, entries, faulted, extra, write, value)

    def user_commit_fresh(
        self, vas: list[int], descs: Any, leaf: Any, strip: int, write: bool, value: int
    ) -> None:
        """:meth:`user_commit` of a run whose pages all just faulted in with ``descs``
        (see ``Cpu.commit_el0_fresh``)."""
        self.cpu.commit_el0_fresh(vas, descs, leaf, strip, write, value)

    def clear_pages_probe(self, pfns: list[int]) -> tuple[int, Any]:
        """How many of ``pfns`` in a row ``clear_page`` could zero now (the linear-map
        alias translates and is writable), and what each store would use."""
        return self.cpu.probe_el1_stores(self._linear_vas(pfns))

    def clear_pages_unprobe(self, kept: list[int]) -> None:
        """Forget what :meth:`clear_pages_probe` readied for pages other than ``kept``."""
        self.cpu.drop_probed_frames(kept)

    def clear_pages_commit(self, pfns: list[int], probed: Any) -> None:
        """``clear_page`` of each of ``pfns`` (probed with :meth:`clear_pages_probe`)."""
        self.cpu.commit_el1_zero_pages(self._linear_vas(pfns), probed)

    def _linear_vas(self, pfns: list[int]) -> list[int]:
        """The linear-map address of each pfn (the linear map is linear)."""
        base = np.uint64(int(self.layout.pfn_to_virt(0)))
        vas: list[int] = ((np.asarray(pfns, dtype=np.uint64) << np.uint64(12)) + base).tolist()
        return vas
