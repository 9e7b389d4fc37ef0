"""The series' benchmarks as workloads: each drives the Linux paths its doc names."""

from __future__ import annotations

import pytest

import kpsim
from kpsim.audit.invariants import audit
from kpsim.workloads.registry import run_workload


def boot(on: bool = True, batching: bool = True) -> kpsim.Machine:
    return kpsim.boot(memory="256M", cpus=2, hardened_pgtables=on, batching=batching)


@pytest.mark.parametrize("h", [0, 1])
def test_fork_switches_per_pte_without_batching_and_per_table_with(h):
    """Without batching every PTE write of fork switches POR_EL1 twice; with it, per section."""
    nob = run_workload(boot(batching=False), "micromm.fork", {"size": "8M", "h": h})
    bat = run_workload(boot(batching=True), "micromm.fork", {"size": "8M", "h": h})
    off = run_workload(boot(on=False), "micromm.fork", {"size": "8M", "h": h})
    assert nob["por_write"] >= 2 * nob["pte_write"] - 64
    assert bat["por_write"] < nob["por_write"] / 50
    assert off["por_write"] == 0 and off["set_memory_pkey"] == 0  # negative control
    assert bat["set_memory_pkey"] == bat["pgtable_alloc"] > 0  # every child table keyed
    assert off["pte_write"] == bat["pte_write"] - bat["set_memory_pkey"]
    assert off["fork_pte_copy"] == 2048 + 1  # counted by the mm: the stack page is copied too


def test_h1_populates_pmd_sized_folios_mapped_by_ptes():
    """h=1: THPs were faulted, then split to PTE mappings: fork copies PTE tables, 1 batch/THP."""
    m = boot()
    c = run_workload(m, "micromm.fork", {"size": "8M", "h": 1})
    assert m.counters["thp_fault_alloc"] == 4 and m.counters["thp_split_pmd"] == 4
    assert c["fork_folio"] == 4 + 1 and c["fork_pte_copy"] == 2048 + 1  # + the stack page
    c0 = run_workload(boot(), "micromm.fork", {"size": "8M", "h": 0})
    assert c0["fork_folio"] == 2048 + 1
    assert c["pte_write"] == c0["pte_write"]


def test_munmap_frees_pages_and_tables_and_keys_them_back():
    """munmap clears every PTE, frees the PTE tables (unkeyed), and the pages."""
    c = run_workload(boot(batching=False), "micromm.munmap", {"size": "8M", "h": 0})
    assert c["zap_pte"] == 2048 and c["zap_folio"] == 2048
    assert c["pgtable_free"] >= 4 and c["set_memory_pkey"] == c["pgtable_free"]
    assert c["page_alloc.free"] == 2048 + c["pgtable_free"]
    assert c["por_write"] >= 2 * 2048


def test_munmap_h1_reports_thp_frees_as_linux_makes_them():
    """h=1: each PTE-mapped THP is one order-9 folio, freed as one order-9 block."""
    m = boot()
    c = run_workload(m, "micromm.munmap", {"size": "8M", "h": 1})
    assert c["zap_folio"] == 4 and c["page_alloc.free_order_9"] == 4
    assert c["page_alloc.free"] == 4 + c["pgtable_free"]
    assert audit(m) == []


def test_munmap_repeat_scales_counts():
    one = run_workload(boot(), "micromm.munmap", {"size": "4M"})
    three = run_workload(boot(), "micromm.munmap", {"size": "4M", "repeat": 3})
    assert three["zap_pte"] == 3 * one["zap_pte"]


@pytest.mark.parametrize("pages", [1, 16, 256])
def test_fix_size_alloc_maps_and_unmaps_each_page(pages):
    """Each loop is one vmalloc and one vfree; without batching each PTE write switches twice."""
    c = run_workload(boot(batching=False), "vmalloc.fix_size_alloc", {"pages": pages, "loops": 20})
    assert c["vmalloc"] == c["vfree"] == 20 and c["vmalloc_page"] == 20 * pages
    assert c["pte_write"] >= 2 * 20 * pages
    assert c["por_write"] >= 2 * 2 * 20 * pages
    b = run_workload(boot(batching=True), "vmalloc.fix_size_alloc", {"pages": pages, "loops": 20})
    # per lazy-MMU section (two per loop, more when a range crosses a PTE table), not per PTE
    assert b["por_write"] <= 2 * b["lazy_mmu_sections"] + 2 * b["set_memory_pkey"]
    assert b["lazy_mmu_sections"] <= 4 * 20 + 2 * b["set_memory_pkey"]
    off = run_workload(boot(on=False), "vmalloc.fix_size_alloc", {"pages": pages, "loops": 20})
    assert off["por_write"] == 0


def test_random_size_alloc_is_seeded():
    a = run_workload(boot(), "vmalloc.random_size_alloc", {"loops": 10}, seed=1)
    b = run_workload(boot(), "vmalloc.random_size_alloc", {"loops": 10}, seed=1)
    c = run_workload(boot(), "vmalloc.random_size_alloc", {"loops": 10}, seed=2)
    assert a["vmalloc_page"] == b["vmalloc_page"] != c["vmalloc_page"]
    assert 10 <= a["vmalloc_page"] <= 1000


def test_vm_map_ram_maps_existing_pages():
    """vm_map_ram allocates no page in the timed loop: only mappings and area bookkeeping."""
    c = run_workload(boot(), "vmalloc.vm_map_ram", {"pages": 4, "loops": 10})
    assert c["vm_map_ram"] == c["vm_unmap_ram"] == 10
    assert c["page_alloc.alloc"] <= 2  # at most a first PTE table
    assert c["pte_write"] >= 2 * 4 * 10


def test_kernbench_runs_processes_over_cpus_and_leaves_no_tables():
    """kernbench: faults, execs, forks and exits on both CPUs; every table it made is freed."""
    m = boot()
    c = run_workload(m, "kernbench", {"processes": 3, "helper_every": 2, "heap": "1M"})
    assert c["other_cycles"] == 3 * 20_000_000
    assert c["pgfault"] > 100 and c["context_switches"] >= 6
    assert c["pgtable_alloc"] == c["pgtable_free"] > 0
    assert c["set_memory_pkey"] == c["pgtable_alloc"] + c["pgtable_free"]
    assert audit(m) == []
    off = run_workload(boot(on=False), "kernbench", {"processes": 3, "helper_every": 2,
                                                      "heap": "1M"})  # fmt: skip
    assert off["por_write"] == 0 and off["pgfault"] == c["pgfault"]
