"""The v6 pkeys block allocator (PBA): refill, cache, reserve protocol, shrinker, noblock."""

import pytest

from kpsim.audit.invariants import audit, linear_pkey
from kpsim.cli.main import main
from kpsim.errors import ConfigError
from kpsim.kpkeys.pba import (
    BLOCK_NR_PAGES,
    PBA_NR_RESERVED_PAGES,
    PBA_UNSHRINKABLE_PAGES,
    PkeysBlockAllocator,
)
from kpsim.machine import MachineConfig, boot
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL, Gfp

MEM = "512M"


@pytest.fixture
def m():
    return boot(memory=MEM, linear_map="block")


def pba(m) -> PkeysBlockAllocator:
    assert isinstance(m.kpkeys, PkeysBlockAllocator)
    return m.kpkeys


#: id(machine) -> (the machine, its tables allocated by the test and not yet freed); the
#: machine is kept so that its id cannot be reused by a later test's machine
USED: dict[int, tuple[object, list[int]]] = {}


def _used(m) -> list[int]:
    entry = USED.get(id(m))
    if entry is None or entry[0] is not m:
        entry = USED[id(m)] = (m, [])
    return entry[1]


def alloc(m, gfp=GFP_PGTABLE_KERNEL, level=3):
    """A kernel table page; remembered so that :func:`clean` can free it before auditing."""
    pfn = m.k.pgtable.alloc_table(gfp, level, "kernel")
    if pfn is not None:
        _used(m).append(pfn)
    return pfn


def release(m, pfns):
    for pfn in pfns:
        m.k.pgtable.free_table(pfn)
        _used(m).remove(pfn)


def clean(m):
    """Free the test's unattached tables, then audit."""
    release(m, list(_used(m)))
    USED.pop(id(m), None)
    return not audit(m)


def test_pba_is_the_default_on_block_maps_and_minimal_on_pte():
    assert MachineConfig(linear_map="block").effective_allocator == "pba"
    assert MachineConfig(linear_map="pte").effective_allocator == "minimal"
    assert MachineConfig(linear_map="pte", allocator="pba").effective_allocator == "pba"
    with pytest.raises(ConfigError, match="unknown allocator"):
        MachineConfig(allocator="slab")


def test_boot_refills_one_block_keyed_and_clean(m):
    """pba_init's refill becomes the early region; pba_init_late keys it; audit clean."""
    p = pba(m)
    assert p.enabled and p.can_set_pkey and p.early_region is None
    assert len(p.blocks) == 1
    (head,) = p.blocks
    assert head % BLOCK_NR_PAGES == 0
    assert linear_pkey(m, head) == 1 and linear_pkey(m, head + BLOCK_NR_PAGES - 1) == 1
    assert m.counters["pba.refill_order_9"] == 1
    assert clean(m)


def test_alloc_free_stay_in_cache_without_set_memory_pkey(m):
    """Allocation and free touch only the cache: pages keep pkey 1, the buddy never sees them."""
    p = pba(m)
    before = m.counters["set_memory_pkey"]
    n0 = p.nr_cached
    pfns = [alloc(m) for _ in range(100)]
    assert p.nr_cached == n0 - 100
    assert all(linear_pkey(m, pfn) == 1 for pfn in pfns)
    head = pfns[0] & ~(BLOCK_NR_PAGES - 1)
    assert p.blocks[head] == n0 - 100
    release(m, pfns)
    assert p.nr_cached == n0 and p.blocks[head] == n0
    assert all(not m.k.page_alloc.is_free(pfn) and linear_pkey(m, pfn) == 1 for pfn in pfns)
    assert m.counters["set_memory_pkey"] == before
    assert clean(m)


def test_zeroed_on_allocation_through_a_guard(m):
    """A reused cached page is zeroed (GFP_ZERO) with a guarded write, not a faulting one."""
    pfn = alloc(m)
    m.arch.pt_store(m.arch.page_to_virt(pfn), 0x1234)
    release(m, [pfn])
    again = alloc(m)
    assert again == pfn  # LIFO
    assert m.mem.read64(pfn << 12) == 0


def test_ordinary_allocation_leaves_the_reserve_split_may_take_it(m):
    """Ordinary requests refill rather than take the last 4; __GFP_PGTABLE_SPLIT may."""
    p = pba(m)
    while p.nr_cached > PBA_NR_RESERVED_PAGES + 1:
        alloc(m)
    refills = m.counters["pba.refill"]
    alloc(m)
    assert p.nr_cached == PBA_NR_RESERVED_PAGES and m.counters["pba.refill"] == refills
    alloc(m)  # must refill: the reserve is untouchable
    assert m.counters["pba.refill"] == refills + 1
    assert p.nr_cached > PBA_NR_RESERVED_PAGES
    # Now drain to the reserve and take it with the split flag.
    while p.nr_cached > PBA_NR_RESERVED_PAGES:
        alloc(m)
    refills = m.counters["pba.refill"]
    got = [alloc(m, GFP_PGTABLE_KERNEL | Gfp.PGTABLE_SPLIT) for _ in range(4)]
    assert all(g is not None for g in got) and p.nr_cached == 0
    assert m.counters["pba.refill"] == refills and m.counters["pba.reserve_used"] == 4
    # An empty reserve: a split request fails (v6 would self-deadlock) with a WARN.
    assert alloc(m, GFP_PGTABLE_KERNEL | Gfp.PGTABLE_SPLIT) is None
    assert m.counters["pba.split_reserve_empty"] == 1


def test_refill_falls_back_to_order_4_then_2(m):
    """No order-9 block: order 4; none of those either: order 2."""
    p = pba(m)
    taken = []
    while (pfn := m.k.page_alloc.alloc_pages(GFP_KERNEL | Gfp.NOWARN, 9)) is not None:
        taken.append((pfn, 9))
    while p.nr_cached > PBA_NR_RESERVED_PAGES:
        alloc(m)
    alloc(m)
    assert m.counters["pba.refill_order_4"] == 1
    while (pfn := m.k.page_alloc.alloc_pages(GFP_KERNEL | Gfp.NOWARN, 4)) is not None:
        taken.append((pfn, 4))
    while p.nr_cached > PBA_NR_RESERVED_PAGES:
        alloc(m)
    alloc(m)
    assert m.counters["pba.refill_order_2"] == 1
    assert clean(m)
    for pfn, order in taken:
        m.k.page_alloc.free_pages(pfn, order)


def test_refill_failure_is_clean(m):
    """With the buddy allocator empty, a refill fails: NULL, a WARN, no page lost."""
    p = pba(m)
    taken = []
    while (pfn := m.k.page_alloc.alloc_pages(GFP_KERNEL | Gfp.NOWARN, 0)) is not None:
        taken.append(pfn)
    while p.nr_cached > PBA_NR_RESERVED_PAGES:
        alloc(m)
    free_before = m.k.page_alloc.nr_free_pages()
    assert alloc(m) is None
    assert m.counters["pba.refill_fail"] >= 1 and m.counters["pba.alloc_fail"] == 1
    assert m.k.page_alloc.nr_free_pages() == free_before
    assert p.nr_cached == PBA_NR_RESERVED_PAGES
    assert clean(m)
    for pfn in taken:
        m.k.page_alloc.free_pages(pfn, 0)


def test_foreign_split_uses_the_reserve_and_retries_when_not_ready(m):
    """prepare refills; a racing context drains the reserve: not ready, retry, then split."""
    p = pba(m)
    while p.nr_cached > PBA_NR_RESERVED_PAGES:
        alloc(m)
    raced = []

    def race():
        if not raced:  # another CPU takes reserve pages between prepare and the lock
            raced.extend(alloc(m, GFP_PGTABLE_KERNEL | Gfp.PGTABLE_SPLIT) for _ in range(3))

    m.arch.split_race_hook = race
    head = m.k.page_alloc.alloc_pages(GFP_KERNEL, 9)  # a block still PMD-mapped
    pfn = head + 5
    splits = m.counters["split_pmd"]
    assert m.arch.set_direct_map_invalid_noflush(pfn) == 0
    assert m.counters["split_not_ready"] == 1
    assert m.counters["pba.prepare_refill"] == 1  # the first prepare found 4 cached
    assert m.counters["split_pmd"] == splits + 1
    m.arch.split_race_hook = None
    m.arch.set_direct_map_default_noflush(pfn)
    m.k.page_alloc.free_pages(head, 9)
    release(m, [r for r in raced if r is not None])
    assert clean(m)


def test_every_split_table_is_keyed_when_installed():
    """The audit runs inside the split path: each new table already carries pkey 1."""
    from kpsim.workloads.pba_churn import churn

    m = boot(memory=MEM, linear_map="block")
    seen = []

    def observer(level, child):
        seen.append((level, linear_pkey(m, child)))
        assert not audit(m)

    m.arch.split_observer = observer
    churn(m, 60, seed=3, foreign_every=2, spread=True)
    assert seen and all(pkey == 1 for _, pkey in seen)


def test_shrinker_frees_a_whole_free_block_with_one_call(m):
    """An entirely free block goes back whole: one set_memory_pkey, no split."""
    p = pba(m)
    pfns = [alloc(m) for _ in range(p.nr_cached - PBA_NR_RESERVED_PAGES + 1)]  # refill
    assert len(p.blocks) == 2
    release(m, pfns)
    full = [h for h, f in p.blocks.items() if f == BLOCK_NR_PAGES]
    assert full
    calls, splits = m.counters["set_memory_pkey"], m.counters["split_pmd"]
    freed = p.pba_shrink_scan(128)
    assert freed == BLOCK_NR_PAGES
    assert m.counters["set_memory_pkey"] == calls + 1 and m.counters["split_pmd"] == splits
    assert m.k.page_alloc.is_free(full[0]) and linear_pkey(m, full[0]) == 0
    assert clean(m)


def test_shrinker_keeps_16_and_partial_needs_an_eighth(m):
    """Partial shrink of a block only when it frees >= 64 pages; never below 16 cached."""
    p = pba(m)
    (head,) = p.blocks
    n = p.nr_cached
    used = [alloc(m) for _ in range(n - 40)]  # 40 left: block has 40 free (< 64)
    freed = p.pba_shrink_scan(128)
    assert freed == 0  # no non-block pages, block under an eighth
    release(m, used[:100])  # now 140 free in the block
    splits = m.counters["split_pmd"]
    freed = p.pba_shrink_scan(128)
    assert freed == 124 and head not in p.blocks  # min(128, 140 - 16 shrinkable)
    # Resetting the first page split the block's PMD: its PTE table came from the cache.
    assert m.counters["split_pmd"] == splits + 1
    assert p.nr_cached == PBA_UNSHRINKABLE_PAGES - 1
    assert p.pba_shrink_scan(128) == 0
    assert clean(m)


def test_memory_pressure_asks_the_shrinker(m):
    """A failing buddy allocation runs direct reclaim, which shrinks the cache."""
    from kpsim.workloads.pba_churn import memory_pressure

    p = pba(m)
    pfns = [alloc(m) for _ in range(600)]
    release(m, pfns)
    cached = p.nr_cached
    memory_pressure(m, order=0)
    assert m.counters["page_alloc.direct_reclaim"] >= 1
    assert p.nr_cached < cached and m.counters["pba.shrink_freed"] > 0
    assert p.nr_cached >= PBA_UNSHRINKABLE_PAGES
    assert clean(m)


def test_on_demand_shrink(m):
    p = pba(m)
    release(m, [alloc(m) for _ in range(600)])
    assert p.shrink() > 0 and p.nr_cached <= BLOCK_NR_PAGES
    assert clean(m)


def test_noblock_fallback_on_pte_maps_is_the_seed():
    """--allocator pba on a pte map: 2 set_memory_pkey per alloc/free, pages to the buddy."""
    m = boot(memory=MEM, linear_map="pte", allocator="pba")
    p = pba(m)
    assert not p.enabled and not p.cache
    before = m.counters["set_memory_pkey"]
    pfn = alloc(m)
    assert linear_pkey(m, pfn) == 1
    release(m, [pfn])
    assert m.k.page_alloc.is_free(pfn) and linear_pkey(m, pfn) == 0
    assert m.counters["set_memory_pkey"] - before == 2
    assert clean(m)


def test_stray_write_to_cached_page_faults_and_control_lands():
    """Cached pages are protected too; without the feature the same store lands."""
    from kpsim.errors import AccessFault

    for hardened in (True, False):
        m = boot(memory=MEM, linear_map="block", hardened_pgtables=hardened)
        pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
        m.k.pgtable.free_table(pfn)
        va = m.arch.page_to_virt(pfn)
        if hardened:
            with pytest.raises(AccessFault):
                m.hw.cpus[1].store(va, 0xDEAD)
        else:
            m.hw.cpus[1].store(va, 0xDEAD)
            assert m.mem.read64(pfn << 12) == 0xDEAD


def test_kunit_passes_with_pba_on_block(capsys):
    assert main(["kunit", "--memory", MEM, "--linear-map", "block", "--allocator", "pba"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["boot", "--allocator", "slab"],
        ["boot", "--linear-map", "block", "--allocator", "grouped"],
        ["boot", "--linear-map", "block", "--allocator", "minimal"],
    ],
)
def test_bad_allocator_choices_exit_2(capsys, argv):
    assert main([*argv, "--memory", MEM]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1


def test_heavy_workload_audit_clean_at_every_split_and_after_pressure():
    """Thousands of processes, vmalloc churn, foreign splits, then memory pressure: the
    audit is clean inside every split and at the end; no page reaches the buddy keyed."""
    from kpsim.audit.freewatch import FreeWatch
    from kpsim.workloads.pba_churn import churn, memory_pressure

    m = boot(memory=MEM, linear_map="block")
    splits = []

    def observer(level, child):
        splits.append(level)
        assert not audit(m)

    m.arch.split_observer = observer
    with FreeWatch(m) as watch:
        stats = churn(m, 2000, seed=7, pool=120, foreign_every=16, spread=True)
        memory_pressure(m, order=0)
    assert stats["processes"] == 2000 and splits
    assert m.counters["pgtable_alloc"] > 4000
    assert m.counters["pba.shrink_freed"] > 0
    assert not watch.violations and watch.pages_checked
    assert not audit(m)
    assert not [w for w in m.k.warnings if "pba" in w.function or "refill" in w.function]


def test_timeline_samples_refills_and_shrinks():
    """The composition series records each refill and shrink; boot --json carries it."""
    m = boot(memory=MEM, linear_map="block")
    pfns = [alloc(m) for _ in range(1100)]
    release(m, pfns)
    pba(m).shrink()
    events = [s["event"] for s in m.timeline.samples]
    assert events[:3] == ["refill_order_9", "pba_init", "init_late"]
    assert events.count("refill_order_9") == 3 and "shrink_block" in events
    last = m.timeline.samples[-1]
    assert last["cached"] == pba(m).nr_cached and last["reserve"] == PBA_NR_RESERVED_PAGES
    assert last["block_pct"] > 95 and set(last["splits"]) == {"pud", "pmd", "cont"}
    assert set(last["tables"]) == {"pud", "pmd", "pte"}


def test_boot_json_has_allocator_and_timeline(capsys):
    import json

    assert main(["boot", "--memory", MEM, "--linear-map", "block", "--json"]) == 0
    lm = json.loads(capsys.readouterr().out)["linear_map"]
    assert lm["allocator"]["name"] == "pba" and lm["allocator"]["reserve"] == 4
    assert lm["block_pct"] > 95 and lm["timeline"][-1]["event"] == "init_late"


def test_a_split_across_two_1g_blocks_takes_both_groups_and_is_flagged():
    """[DERIVED] limit of v6's protocol: one change straddling two untouched 1 GiB blocks
    needs 4 tables (PMD + PTE at each edge), so group 1 is gone too; the next refill
    starts with no reserve for its own split, which the model flags (WARN + counter)."""
    m = boot(memory="4G", linear_map="block")
    p = pba(m)
    while p.nr_cached > PBA_NR_RESERVED_PAGES:
        alloc(m)
    edge = m.mem.base + (2 << 30)  # both neighbouring 1 GiB blocks are still PUD-mapped
    pud0 = m.counters["split_pud"]
    assert m.arch.set_memory_ro(m.arch.phys_to_virt(edge - 3 * 4096), 6) == 0
    assert m.counters["split_pud"] == pud0 + 2 and p.nr_cached == 0
    alloc(m)  # refills with an empty reserve
    assert m.counters["pba.refill_reserve_low"] == 1
    assert any(w.function == "__refill_pages" for w in m.k.warnings)
    m.arch.set_memory_rw(m.arch.phys_to_virt(edge - 3 * 4096), 6)
    assert clean(m)
