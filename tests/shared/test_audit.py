"""The audit on every architecture: clean on a busy hardened machine, and each
corruption it is about is caught (negative controls: the same machine audits clean
before the corruption and again after it is undone)."""

from __future__ import annotations

from kpsim.audit.invariants import audit
from kpsim.mm.gfp import GFP_KERNEL
from kpsim.mm.process import Process

from .rig import for_each_arch, machine

MiB = 1 << 20


def _busy(arch):
    m = machine(arch)
    p = Process.create(m, "p")
    a = p.mmap(None, 4 * MiB)
    p.touch_range(a, 4 * MiB, stride=16 * 4096, write=True)
    child = p.fork(cpu=1)
    child.touch(a, write=True)
    return m, p


def _kinds(violations):
    return {v.invariant for v in violations}


@for_each_arch("audit")
def test_busy_machine_audits_clean(arch):
    """Boot, a process, a fork and a copy-on-write: nothing to report."""
    m, _ = _busy(arch)
    assert audit(m) == []


@for_each_arch("audit")
def test_table_set_back_to_pkey_0_is_caught_and_undone(arch):
    """A user PTE table re-keyed to 0 is a table-keyed violation naming the table."""
    m, p = _busy(arch)
    pfn = next(iter(p.mm.tables[3].values()))
    va = m.arch.page_to_virt(pfn)
    m.arch.set_memory_pkey(va, 1, 0)
    found = audit(m)
    assert _kinds(found) == {"table-keyed"} and f"{pfn:#x}" in found[0].detail
    m.arch.set_memory_pkey(va, 1, 1)
    assert audit(m) == []


@for_each_arch("audit")
def test_stray_pkey_on_a_page_that_is_no_table_is_caught(arch):
    """A page that holds no table but carries the page-table pkey is a stray key."""
    m, _ = _busy(arch)
    pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
    va = m.arch.page_to_virt(pfn)
    m.arch.set_memory_pkey(va, 1, 1)
    assert _kinds(audit(m)) == {"stray-key"}
    m.arch.set_memory_pkey(va, 1, 0)
    m.k.page_alloc.free_pages(pfn, 0)
    assert audit(m) == []
