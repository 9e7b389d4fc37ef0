"""The two comparison policies: x86 grouped pages and the whole-map split reserve."""

import re

from kpsim.audit.invariants import audit, linear_pkey
from kpsim.kpkeys.grouped import GroupedPages
from kpsim.kpkeys.reserve import SplitReserve, reserve_pages_needed
from kpsim.machine import boot
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL
from kpsim.workloads.pba_churn import churn

MEM = "512M"


def test_grouped_refills_a_keyed_block_and_caches_frees():
    """One 2 MiB refill keyed by one call serves 512 allocations; frees stay cached."""
    m = boot(memory=MEM, linear_map="pte", allocator="grouped")
    g = m.kpkeys
    assert isinstance(g, GroupedPages)
    before = m.counters["set_memory_pkey"]
    pg = m.k.pgtable
    pfns = [pg.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel") for _ in range(512)]
    assert m.counters["set_memory_pkey"] - before == 1
    assert m.counters["pba.refill_order_9"] == 1 and len(g.cache) == 0
    assert all(linear_pkey(m, p) == 1 for p in pfns)
    for p in pfns:
        pg.free_table(p)
    assert len(g.cache) == 512 and m.counters["set_memory_pkey"] - before == 1
    assert not audit(m)
    # its shrinker resets and frees page by page (one call each)
    assert g.pba_shrink_scan(10) == 10 and m.counters["set_memory_pkey"] - before == 11
    assert not audit(m)


def test_grouped_on_block_leaves_exactly_the_recursive_split_tables_unprotected():
    """No reserve: keying a refill splits the map while the cache is empty; the split's
    table comes from the buddy unkeyed, and the audit names exactly those tables."""
    m = boot(memory=MEM, linear_map="block", allocator="grouped", allow_unsafe_split=True)
    g = m.kpkeys
    assert g.unprotected and m.counters["pba.unprotected"] == len(g.unprotected)
    bad = {
        int(re.search(r"pfn (0x[0-9a-f]+)", v.detail).group(1), 16)
        for v in audit(m)
        if v.invariant == "table-keyed"
    }
    assert bad == g.unprotected
    assert all(linear_pkey(m, p) == 0 for p in g.unprotected)


def test_reserve_is_sized_for_the_whole_map_and_keeps_every_split_keyed():
    m = boot(memory=MEM, linear_map="block", allocator="reserve")
    r = m.kpkeys
    assert isinstance(r, SplitReserve)
    assert reserve_pages_needed(512 << 20) == 1 + 256
    assert r.reserve_size == 512  # whole 2 MiB blocks
    assert not audit(m)
    seen = []

    def observer(level, child):
        seen.append(linear_pkey(m, child))
        assert not audit(m)

    m.arch.split_observer = observer
    level0 = r.reserve_level()
    churn(m, 80, seed=5, foreign_every=2, spread=True)
    assert seen and all(p == 1 for p in seen)
    assert r.reserve_level() == level0 - len(seen)
    assert not audit(m)
