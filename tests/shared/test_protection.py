"""Page-table pages are protected by the pkey hardware on both architectures: a store
to a live table page through its kernel alias, from the default context, faults with
the feature on; the same store lands with the feature off or without the hardware
(negative controls); the guarded page-table write path still writes."""

from __future__ import annotations

import pytest

from kpsim.mm.maccess import EFAULT, copy_to_kernel_nofault
from kpsim.mm.process import Process

from .rig import for_each_arch, machine

MiB = 1 << 20


def _user_tables(m):
    """A process with touched anonymous memory; its PTE and PMD table pages."""
    p = Process.create(m, "p")
    a = p.mmap(None, 2 * MiB)
    p.touch_range(a, 2 * MiB, stride=64 * 4096, write=True)
    return p, a, next(iter(p.mm.tables[3].values())), next(iter(p.mm.tables[2].values()))


def _store_own_entry(m, pfn, index=0):
    """copy_to_kernel_nofault of a table entry onto itself, at the default context."""
    ptr = m.arch.page_to_virt(pfn) + 8 * index
    return copy_to_kernel_nofault(m.arch.cpu, ptr, m.mem.read64((pfn << 12) + 8 * index))


@for_each_arch("protection")
@pytest.mark.parametrize("level", ["pte", "pmd"])
def test_table_write_at_default_context_faults(arch, level):
    """Feature on: the store to a user PTE or PMD table page is stopped (-EFAULT)."""
    m = machine(arch)
    _, _, pte, pmd = _user_tables(m)
    assert _store_own_entry(m, pte if level == "pte" else pmd) == EFAULT


@for_each_arch("protection")
@pytest.mark.parametrize("off", [{"hardened_pgtables": False}, {"pkeys": False}],
                         ids=["feature-off", "no-pkey-hw"])  # fmt: skip
def test_negative_control_the_same_store_lands(arch, off):
    """Feature off, or CPUs without the pkey hardware: the same store succeeds."""
    m = machine(arch, **off)
    _, _, pte, pmd = _user_tables(m)
    assert _store_own_entry(m, pte) == 0
    assert _store_own_entry(m, pmd) == 0


@for_each_arch("protection")
def test_guarded_page_table_writes_still_land(arch):
    """The kernel's own (guarded) page-table writes are not stopped: unmapping clears
    the PTEs it wrote, and the machine's store count moved."""
    m = machine(arch)
    p, a, pte, _ = _user_tables(m)
    assert m.mem.read64(pte << 12) != 0 or any(m.mem.frame_ro(pte))
    before = m.counters["pte_write"]
    p.munmap(a, 2 * MiB)
    assert m.counters["pte_write"] > before
    assert p.pt_pages() < 4  # the tables it wrote were torn down
