"""Bounds of pt-lifecycle.md §4 on synthetic maps and present ranges; snapshot files."""

import json
import types

import pytest

from kpsim.errors import InputError
from kpsim.workloads.snapshot import (
    Snapshot,
    Vma,
    check_snapshot,
    count_slots,
    load_snapshot,
    merge_ranges,
    parse_maps,
    pt_bounds,
    snapshot_from_json,
    snapshot_to_json,
    user_vmas,
)

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40

MAPS = """\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 131 /usr/bin/sleep
55d0c0a02000-55d0c0a06000 r-xp 00002000 fd:01 131 /usr/bin/sleep
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0          [heap]
7ffd5a000000-7ffd5a021000 rw-p 00000000 00:00 0          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
"""


def vma(start, end):
    return Vma(start, end, "rw-p", 0, "")


def test_count_slots_is_the_union_of_slot_intervals():
    """count_slots counts distinct slots touched by the ranges, overlaps counted once."""
    assert count_slots([], 21) == 0
    assert count_slots([(0, 4 * K)], 21) == 1
    assert count_slots([(0, 2 * M)], 21) == 1
    assert count_slots([(0, 2 * M + 4 * K)], 21) == 2
    assert count_slots([(2 * M - 4 * K, 2 * M + 4 * K)], 21) == 2
    assert count_slots([(0, 4 * K), (8 * K, 12 * K), (4 * M, 5 * M)], 21) == 2
    assert count_slots([(0, 1 * G), (512 * M, 3 * G)], 30) == 3
    assert count_slots([(0, 2 * M), (2 * M, 4 * M)], 21) == 2


def test_bounds_of_the_s1_s3_layout():
    """S1+S2+S3 present pages give the measured 514 + 33 + 1025 as the lower bound."""
    r1 = [(16 * T + i * 2 * M, 16 * T + i * 2 * M + 4 * K) for i in range(512)]
    r2 = [(16 * T + G, 16 * T + G + 64 * M)]
    r3 = [(32 * T + i * G, 32 * T + i * G + 4 * K) for i in range(512)]
    vmas = [
        vma(16 * T, 16 * T + G),
        vma(16 * T + G, 16 * T + G + 64 * M),
        vma(32 * T, 32 * T + 512 * G),
    ]
    b = pt_bounds(vmas, merge_ranges(r1 + r2 + r3))
    assert b.lower == 514 + 33 + 1025
    assert b.lower_levels == (512 + 32 + 512, 1 + 1 + 512, 2)
    assert b.upper_levels == (512 + 32 + 512 * 512, 2 + 512, 2)
    assert b.upper == sum(b.upper_levels)


def test_lower_equals_upper_when_every_slot_holds_a_page():
    """A VMA whose every 2 MiB slot has a present page has equal bounds."""
    v = [vma(4 * M + 4 * K, 8 * M)]
    b = pt_bounds(v, [(4 * M + 4 * K, 4 * M + 8 * K), (6 * M, 6 * M + 4 * K)])
    assert (b.lower, b.upper) == (4, 4)


def test_merge_ranges_drops_duplicates_and_joins_neighbours():
    """Ranges from a resumed PAGEMAP_SCAN (repeats, overlaps) merge into disjoint ones."""
    assert merge_ranges([(8, 12), (0, 4), (4, 8), (6, 10), (20, 24), (20, 24), (30, 30)]) == [
        (0, 12),
        (20, 24),
    ]


def test_parse_maps_and_vsyscall_dropped():
    """maps lines parse; [vsyscall] is dropped (kernel half, not in the user tables)."""
    vmas = parse_maps(MAPS)
    assert len(vmas) == 5
    assert vmas[2] == Vma(0x55D0C1000000, 0x55D0C1021000, "rw-p", 0, "[heap]")
    assert vmas[1].offset == 0x2000 and vmas[0].path == "/usr/bin/sleep"
    user = user_vmas(vmas, "x86_64")
    assert [v.path for v in user] == ["/usr/bin/sleep", "/usr/bin/sleep", "[heap]", "[stack]"]
    assert user_vmas(vmas, "aarch64")[-1].path == "[stack]"


def snapshot():
    vmas = tuple(user_vmas(parse_maps(MAPS), "x86_64"))
    present = (
        (0x55D0C0A00000, 0x55D0C0A03000),
        (0x55D0C1000000, 0x55D0C1001000),
        (0x7FFD5A020000, 0x7FFD5A021000),
    )
    return Snapshot(4242, "x86_64", 7, vmas, present, "pagemap_scan", "blocked")


def test_check_without_model_uses_lower_bound():
    """With no model, --check's model count is the lower bound; exact means VmPTE equals it."""
    snap = snapshot()
    check = check_snapshot(snap, None)
    b = pt_bounds(snap.vmas, snap.present)
    assert (b.lower, b.upper) == (7, 7)  # 3 PTE + 2 PMD + 2 PUD
    assert check.to_json() == {
        "pid": 4242,
        "vmpte_pages": 7,
        "model_pt_pages": 7,
        "lower": 7,
        "upper": 7,
        "exact": True,
    }
    assert not check.model_available and check.within_bounds


def test_check_with_model_asks_it_for_the_present_ranges():
    """With a model, model_pt_pages comes from model_pt_pages_for_present(ranges)."""
    seen = []

    def model_pt_pages_for_present(ranges):
        seen.append(ranges)
        return 11

    model = types.SimpleNamespace(model_pt_pages_for_present=model_pt_pages_for_present)
    check = check_snapshot(snapshot(), model)
    assert seen == [list(snapshot().present)]
    assert check.model_pt_pages == 11 and check.exact is False and check.model_available


def test_snapshot_file_round_trip(tmp_path):
    """A snapshot written as JSON reads back equal; a broken file is an InputError."""
    snap = snapshot()
    path = tmp_path / "s.json"
    path.write_text(json.dumps(snapshot_to_json(snap)))
    assert load_snapshot(path) == snap
    assert json.loads(path.read_text())["present"][0] == ["0x55d0c0a00000", "0x55d0c0a03000"]
    with pytest.raises(InputError, match="not a kpsim snapshot"):
        snapshot_from_json({"format": 1, "pid": 1})
    path.write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        load_snapshot(path)
