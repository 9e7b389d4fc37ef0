"""split_kernel_leaf_mapping through set_memory_*: exact tables, edges only, MMU read-back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kpsim.arch.arm64.memory import PAGE_OFFSET
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import Translation, walk
from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.report.linear_map import linear_map_mappings

SZ_1G = 1 << 30
SZ_2M = 2 << 20
# a page in the middle of the third GiB, neither 2M- nor 64K-aligned
PAGE = PAGE_OFFSET + 2 * SZ_1G + 37 * SZ_2M + 5 * 4096


def _block_machine() -> Machine:
    cfg = MachineConfig(memory=4 * SZ_1G, linear_map="block", hardened_pgtables=False)
    return Machine.boot(cfg, rodata_ro=False)


def _walk(m: Machine, va: int) -> Translation:
    t = walk(m.mem, m.arch.swapper_pg_dir, va)
    assert isinstance(t, Translation), t
    return t


def test_set_memory_pkey_one_page_splits_one_pmd_and_one_pte_table() -> None:
    """One page keyed inside a 1G block: exactly one new PMD and one new PTE table."""
    m = _block_machine()
    before = m.k.pgtable.count("kernel")
    assert m.arch.set_memory_pkey(PAGE, 1, 1) == 0
    after = m.k.pgtable.count("kernel")
    assert after == {**before, "pmd": before["pmd"] + 1, "pte": before["pte"] + 1}
    c = m.counters
    assert (c["split_pud"], c["split_pmd"], c["split_cont"]) == (1, 1, 2)


def test_split_clears_contiguous_groups_only_around_the_page() -> None:
    """Only the 32M group and the 64K group holding the page lose PTE_CONT."""
    m = _block_machine()
    m.arch.set_memory_pkey(PAGE, 1, 1)
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    # the first GiB is PMD-mapped from boot (map_mem maps the image's text+rodata alias
    # apart): 31 32M runs and 16 2M blocks there, plus the split's 31 + 15 here
    assert maps == {"1G": 2, "32M": 62, "2M": 31, "64K": 31, "4K": 16}
    assert _walk(m, PAGE).po_index == 1
    assert _walk(m, PAGE).level == 3
    assert _walk(m, PAGE + 4096).po_index == 0
    assert _walk(m, PAGE + 16 * 4096).desc & d.CONT
    assert _walk(m, PAGE + 40 * SZ_2M).desc & d.CONT
    assert _walk(m, PAGE - SZ_1G).level == 1


def test_set_memory_ro_one_page_in_block_splits_the_same_way() -> None:
    """set_memory_ro on one page inside a 1G block makes only that page read-only."""
    m = _block_machine()
    assert m.arch.set_memory_ro(PAGE, 1) == 0
    assert not _walk(m, PAGE).perm_el1 & d.Perm.W
    assert _walk(m, PAGE + 4096).perm_el1 & d.Perm.W
    assert m.counters["split_pud"] == 1


def test_set_memory_ro_flushes_the_old_writable_translation() -> None:
    """After set_memory_ro a store faults: the writable TLB entry was invalidated."""
    m = _block_machine()
    cpu = m.hw.cpus[0]
    cpu.store(PAGE, 7)  # fills the TLB with the writable 1G translation
    assert m.arch.set_memory_ro(PAGE, 1) == 0
    assert isinstance(cpu.try_store(PAGE, 8), Fault)
    assert cpu.try_store(PAGE + 4096, 8) is None


def test_without_flush_stale_writable_entry_survives() -> None:
    """Negative control: a change without TLB maintenance leaves the store allowed."""
    m = _block_machine()
    cpu = m.hw.cpus[0]
    cpu.store(PAGE, 7)
    assert m.arch.change_memory_common(PAGE, 1, d.AP_RDONLY, d.DBM, flush=False) == 0
    assert cpu.try_store(PAGE, 8) is None


WINDOW = PAGE_OFFSET + 2 * SZ_1G - 2 * SZ_2M  # 8 MiB crossing a 1G and a 2M boundary
WINDOW_PAGES = 4 * SZ_2M // 4096
ops = st.lists(
    st.tuples(
        st.sampled_from(["pkey", "ro", "rw"]),
        st.integers(0, WINDOW_PAGES - 1),
        st.integers(1, 600),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=25, deadline=None)
@given(ops=ops, samples=st.lists(st.integers(-512, WINDOW_PAGES + 512), min_size=20))
def test_random_attribute_changes_match_reference_model(
    ops: list[tuple[str, int, int, int]], samples: list[int]
) -> None:
    """Random set_memory_pkey/ro/rw: every sampled address reads back as the model says."""
    m = _block_machine()
    model: dict[int, tuple[bool, int]] = {}
    for op, first, n, pkey in ops:
        n = min(n, WINDOW_PAGES - first)
        va = WINDOW + first * 4096
        if op == "pkey":
            assert m.arch.set_memory_pkey(va, n, pkey) == 0
        elif op == "ro":
            assert m.arch.set_memory_ro(va, n) == 0
        else:
            assert m.arch.set_memory_rw(va, n) == 0
        for p in range(first, first + n):
            ro, key = model.get(p, (False, 0))
            model[p] = (ro, pkey) if op == "pkey" else (op == "ro", key)
    base_attrs = _walk(m, PAGE_OFFSET + SZ_1G).desc & ~(d.OA_MASK | d.CONT | d.TYPE)
    for p in [*samples, 0, WINDOW_PAGES - 1]:
        t = _walk(m, WINDOW + p * 4096)
        ro, key = model.get(p, (False, 0))
        assert t.pa == m.arch.layout.virt_to_phys(WINDOW + p * 4096)
        assert t.po_index == key
        assert bool(t.perm_el1 & d.Perm.W) == (not ro)
        other = t.desc & ~(d.OA_MASK | d.CONT | d.TYPE | d.POINDEX_MASK | d.AP_RDONLY | d.DBM)
        assert other == base_attrs & ~(d.POINDEX_MASK | d.AP_RDONLY | d.DBM)
