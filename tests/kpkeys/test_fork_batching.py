"""The batching effect on fork (spec §4.7, §4.9, §7): POR_EL1 writes per copied table
page are about 2 with batching and 2 per written entry without.

Every table the child gets costs, in both modes, one ``set_memory_pkey`` (one guarded
linear-map PTE write: 2 register writes) and one link write (``pmd_populate`` and the
like, outside any section: 2). What batching changes is the copy of the entries: one
lazy-MMU section per PTE table (2 writes) instead of 2 per entry written. The 1 GiB
figures are in ``benchmarks/bench_kpkeys.py``; the test uses 32 MiB.
"""

import pytest

from kpsim.machine import boot
from kpsim.mm.process import Process

MiB = 1 << 20
SIZE = 32 * MiB


def fork_counts(batching, hardened=True):
    m = boot(memory="256M", batching=batching, hardened_pgtables=hardened)
    p = Process.create(m, "parent")
    a = p.mmap(None, SIZE)
    p.touch_range(a, SIZE, write=True)
    c0 = m.counters
    child = p.fork(cpu=1)
    c1 = m.counters
    d = {k: c1[k] - c0.get(k, 0) for k in c1}
    return d, child


@pytest.fixture(scope="module")
def on():
    return fork_counts(True)


@pytest.fixture(scope="module")
def off():
    return fork_counts(False)


def test_counter_names_are_the_issue_s(on):
    d, _ = on
    for name in ("pgtable_alloc", "pgtable_free", "set_memory_pkey", "por_write", "isb",
                 "kpkeys_guard_entries", "lazy_mmu_sections", "warnings"):  # fmt: skip
        assert name in d


def test_with_batching_about_2_register_writes_per_copied_table_page(on):
    d, child = on
    pte_tables = len(child.mm.tables[3])
    new_tables = d["pgtable_alloc"]  # child's PGD + PUD + PMD + PTE tables
    assert pte_tables >= SIZE // (2 * MiB) and d["set_memory_pkey"] == new_tables
    keying = 2 * d["set_memory_pkey"]
    linking = 2 * (new_tables - 1)  # every table but the PGD is linked by one write
    copy = d["por_write"] - keying - linking
    assert copy == 2 * pte_tables  # one switch and one restore per copied PTE table
    assert d["por_write"] / new_tables < 6.5  # everything included: 2 + 2 + 2
    assert d["isb"] >= d["por_write"]  # each register write has its ISB (+ TLB barriers)


def test_without_batching_2_register_writes_per_written_entry(on, off):
    d, _ = off
    assert d["por_write"] == 2 * d["pte_write"]  # every entry written switches twice
    # each register write has its ISB; the other ISBs (TLB maintenance) are the same
    assert d["isb"] - d["por_write"] == on[0]["isb"] - on[0]["por_write"]
    # the same entries were written in both runs; only the switches differ
    assert d["pte_write"] == on[0]["pte_write"] > 2 * SIZE // 4096
    assert d["por_write"] / on[0]["por_write"] > 100


def test_control_feature_off_no_register_writes():
    d, _ = fork_counts(True, hardened=False)
    assert d["por_write"] == 0 and d["set_memory_pkey"] == 0 and d["isb"] == 0
