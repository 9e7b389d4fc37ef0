"""The free-path watch: every page-table page freed goes back to pkey 0 before the
buddy allocator gets it (checked at the moment of the free, not after)."""

import pytest

from kpsim.audit.freewatch import FreeWatch
from kpsim.audit.invariants import audit, linear_pkey
from kpsim.machine import boot
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_DEFAULT
from kpsim.workloads.mixed import mixed_workload


@pytest.mark.parametrize("batching", [True, False])
def test_every_table_freed_during_the_mixed_workload_reached_the_buddy_at_pkey_0(batching):
    m = boot(memory="256M", batching=batching)
    before = m.counters["pgtable_free"]
    with FreeWatch(m) as w:
        mixed_workload(m, seed=1)
    freed = m.counters["pgtable_free"] - before
    assert freed > 50
    assert w.pgtable_pages_freed == freed  # every pagetable_free went through the hook
    assert w.pgtable_pages_to_buddy == freed  # the seed allocator keeps none back
    assert w.pages_checked > freed
    assert w.violations == []
    assert audit(m) == []
    assert m.k.page_alloc.free_pages.__self__ is m.k.page_alloc  # the proxy is gone


def test_free_before_restoring_the_key_is_caught_only_by_the_watch():
    """A buggy kpkeys_pgtable_free that frees first and restores pkey 0 afterwards
    leaves a clean machine at rest: only the watch sees the order."""
    m = boot(memory="256M")
    arch, k = m.arch, m.k

    def freed_then_restored(pfn, order):
        k.page_alloc.free_pages(pfn, order)
        arch.set_memory_pkey(arch.page_to_virt(pfn), 1 << order, KPKEYS_PKEY_DEFAULT)

    k.pgtable.kpkeys_free = freed_then_restored
    pfn = k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    with FreeWatch(m) as w:
        k.pgtable.free_table(pfn)
    assert audit(m) == []  # at rest nothing shows
    assert [v.invariant for v in w.violations] == ["free-keyed"]
    assert f"{pfn:#x}" in w.violations[0].detail and w.pgtable_pages_to_buddy == 1


def test_control_the_seed_order_passes_the_watch():
    m = boot(memory="256M")
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    assert linear_pkey(m, pfn) == 1
    with FreeWatch(m) as w:
        m.k.pgtable.free_table(pfn)
    assert w.violations == [] and w.pgtable_pages_to_buddy == 1


def test_free_without_restoring_is_caught_by_watch_and_audit():
    m = boot(memory="256M")
    m.k.pgtable.kpkeys_free = lambda pfn, order: m.k.page_alloc.free_pages(pfn, order)
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    with FreeWatch(m) as w:
        m.k.pgtable.free_table(pfn)
    assert [v.invariant for v in w.violations] == ["free-keyed"]
    assert [v.invariant for v in audit(m)] == ["stray-key"]


def test_any_keyed_page_reaching_the_buddy_is_caught_in_a_high_order_block():
    """Not only table pages: one keyed page inside an order-3 block is found."""
    m = boot(memory="256M")
    pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 3)
    m.arch.set_memory_pkey(m.arch.page_to_virt(pfn + 5), 1, 1)
    with FreeWatch(m) as w:
        m.k.page_alloc.free_pages(pfn, 3)
    assert len(w.violations) == 1 and f"{pfn + 5:#x}" in w.violations[0].detail


def test_a_caching_allocator_holds_pages_back_without_violations():
    """With the PBA on a block-mapped linear map, freed tables stay cached (keyed) and
    are accounted as held; nothing keyed reaches the buddy allocator."""
    m = boot(memory="512M", linear_map="block")
    assert m.config.effective_allocator == "pba"  # chosen automatically on a block map
    with FreeWatch(m) as w:
        mixed_workload(m, seed=2)
    assert w.violations == [] and audit(m) == []
    assert w.pgtable_pages_freed > 0
    assert w.held and w.pgtable_pages_to_buddy + len(w.held) <= w.pgtable_pages_freed
    cached = set(m.kpkeys.kpkeys_cached_pfns())
    assert w.held <= cached | set(m.k.pgtable.live)  # in the cache, or a table again


def test_bulk_frees_are_checked_too():
    """User pages go back through free_pages_bulk: a keyed one among them is caught."""
    m = boot(memory="256M")
    pfns = sorted(m.k.page_alloc.alloc_pages(GFP_KERNEL, 0) for _ in range(700))
    m.arch.set_memory_pkey(m.arch.page_to_virt(pfns[600]), 1, 1)
    with FreeWatch(m) as w:
        m.k.page_alloc.free_pages_bulk(pfns)
    assert w.pages_checked == 700
    assert len(w.violations) == 1 and f"{pfns[600]:#x}" in w.violations[0].detail
    assert "free_pages_bulk" in w.violations[0].detail
