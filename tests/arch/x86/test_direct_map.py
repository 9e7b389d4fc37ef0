"""The x86 direct map after boot and after set_memory changes: DirectMap4k/2M/1G and
direct_map_level2/3_splits against x86 arithmetic computed here, and against the
tables in RAM."""

from __future__ import annotations

import pytest

from kpsim.arch.x86.direct_map_stats import direct_map_mappings
from kpsim.arch.x86.init import split_mem_range
from kpsim.arch.x86.memory import PAGE_OFFSET
from kpsim.machine.boot import Machine

K, M, G = 1 << 10, 1 << 20, 1 << 30


def expected_boot(memory: int) -> dict[str, int]:
    """x86-64 init_mem_mapping by hand: [0, 2M) in 4K pages (the ISA range and the
    4K head up to the first 2M boundary), 2M pages up to 1G, 1G pages up to the last
    whole GiB, then 2M pages to the end (memory is a multiple of 2M)."""
    first_g = min(memory, G)
    gigs = memory // G - 1 if memory >= 2 * G else 0
    tail = memory - G - gigs * G if memory > G else 0
    n4k = (2 * M) // (4 * K)
    n2m = (first_g - 2 * M) // (2 * M) + tail // (2 * M)
    return {"DirectMap4k": n4k * 4, "DirectMap2M": n2m * 2 * K, "DirectMap1G": gigs * G // K}


def boot(memory: str, **kw: object) -> Machine:
    return Machine.boot(arch="x86", memory=memory, hardened_pgtables=False, **kw)


@pytest.mark.parametrize("memory", ["1G", "4G", "4608M", "3G"])
def test_direct_map_after_boot_matches_x86_arithmetic(memory: str) -> None:
    """DirectMap lines after boot are what init_mem_mapping gives, and the walk agrees."""
    m = boot(memory)
    info = m.arch.arch_report_meminfo()
    assert info == expected_boot(m.config.memory)
    leaves = direct_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert leaves["4K"] * 4 == info["DirectMap4k"]
    assert leaves["2M"] * 2 * K == info["DirectMap2M"]
    assert leaves["1G"] * G // K == info["DirectMap1G"]
    assert sum(info.values()) * K == m.config.memory  # the whole of RAM, ISA hole included


def test_pte_policy_maps_everything_with_4k_pages() -> None:
    """linear_map='pte' (debug_pagealloc-like): only 4K pages."""
    m = boot("1G", linear_map="pte")
    assert m.arch.arch_report_meminfo() == {
        "DirectMap4k": G // K,
        "DirectMap2M": 0,
        "DirectMap1G": 0,
    }


def test_split_mem_range_shapes() -> None:
    """split_mem_range: 4K head, 2M up to 1G, 1G, 2M tail, 4K tail."""
    got = split_mem_range(M, 3 * G + 5 * M, large=True, gbpages=True)
    assert got == [
        (M, 2 * M, 0),
        (2 * M, G, 1 << 2),
        (G, 3 * G, (1 << 2) | (1 << 3)),
        (3 * G, 3 * G + 4 * M, 1 << 2),
        (3 * G + 4 * M, 3 * G + 5 * M, 0),
    ]


def test_set_memory_ro_in_a_gigabyte_page_splits_twice_and_counts() -> None:
    """One 4K page inside a 1G page: a level-3 split (1G -> 512 x 2M) and a level-2
    split (2M -> 512 x 4K), each counted once in vmstat; DirectMap moves by the same."""
    m = boot("4G")
    before = m.arch.arch_report_meminfo()
    c0 = m.counters
    addr = PAGE_OFFSET + 2 * G + 5 * (4 * K)
    assert m.arch.set_memory_ro(addr, 1) == 0
    after = m.arch.arch_report_meminfo()
    assert after["DirectMap1G"] == before["DirectMap1G"] - G // K
    assert after["DirectMap2M"] == before["DirectMap2M"] + (G - 2 * M) // K
    assert after["DirectMap4k"] == before["DirectMap4k"] + 2 * M // K
    c = m.counters
    assert c["direct_map_level3_splits"] - c0["direct_map_level3_splits"] == 1
    assert c["direct_map_level2_splits"] - c0["direct_map_level2_splits"] == 1
    leaves = direct_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert leaves["4K"] * 4 == after["DirectMap4k"]
    assert leaves["1G"] * G // K == after["DirectMap1G"]


def test_whole_large_page_is_changed_in_place_without_split() -> None:
    """A request covering a whole 2M page from its start rewrites the leaf: no split."""
    m = boot("4G")
    before = m.arch.arch_report_meminfo()
    assert m.arch.set_memory_ro(PAGE_OFFSET + 64 * M, 512) == 0
    assert m.arch.arch_report_meminfo() == before
    assert m.counters["direct_map_level2_splits"] == 0
    found = m.arch.lookup_address(PAGE_OFFSET + 64 * M)
    assert found is not None and found[1] == 2
    assert not m.arch.read_entry(found[0]) & 2  # RW clear in the 2M leaf


def test_no_change_needed_keeps_the_large_page() -> None:
    """__should_split_large_page: nothing to change -> the large page stays."""
    m = boot("4G")
    before = m.arch.arch_report_meminfo()
    assert m.arch.set_memory_rw(PAGE_OFFSET + 3 * G + 12 * K, 1) == 0  # already RW
    assert m.arch.arch_report_meminfo() == before
    assert m.counters["direct_map_level3_splits"] == 0


def test_boot_time_splits_are_not_vmstat_events() -> None:
    """Splits before SYSTEM_RUNNING (keying at boot) move DirectMap but not vmstat."""
    m = Machine.boot(arch="x86", memory="4G", allocator="pba")
    c = m.counters
    assert c["split_pmd"] + c["split_pud"] > 0
    assert c["direct_map_level2_splits"] == 0 and c["direct_map_level3_splits"] == 0
    assert m.arch.arch_report_meminfo() != expected_boot(m.config.memory)
