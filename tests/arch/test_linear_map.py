"""Linear-map table counts by policy and memory size against the architecture's arithmetic."""

from __future__ import annotations

import pytest

from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.report.linear_map import linear_map_mappings, linear_map_tables

SZ_1G = 1 << 30
SZ_2M = 2 << 20


def _boot(memory: int, policy: str, rodata_ro: bool = False) -> Machine:
    cfg = MachineConfig(memory=memory, linear_map=policy, hardened_pgtables=False)
    return Machine.boot(cfg, rodata_ro=rodata_ro)


@pytest.mark.parametrize("gib", [1, 3, 4])
def test_pte_policy_needs_one_pte_table_per_2m(gib: int) -> None:
    """pte: one level-3 table per 2 MiB, one PMD table per GiB, every page a 4K leaf."""
    m = _boot(gib * SZ_1G, "pte")
    tables = linear_map_tables(m.mem, m.arch.swapper_pg_dir)
    assert tables == {"pud": 1, "pmd": gib, "pte": gib * SZ_1G // SZ_2M}
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert maps == {"1G": 0, "32M": 0, "2M": 0, "64K": 0, "4K": gib * SZ_1G // 4096}


def test_4g_pte_machine_has_2048_linear_pte_tables_and_kimage_ones() -> None:
    """4 GiB pte: 2048 linear-map PTE tables plus the image's 8 static ones."""
    m = _boot(4 * SZ_1G, "pte")
    assert m.k.pgtable.count("kernel")["pte"] == 2048 + 8


def test_block_policy_maps_1g_aligned_machine_with_1g_blocks() -> None:
    """block on a 1 GiB-aligned 4 GiB machine: four 1G blocks, no linear tables below PUD."""
    m = _boot(4 * SZ_1G, "block")
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert maps == {"1G": 4, "32M": 0, "2M": 0, "64K": 0, "4K": 0}
    assert linear_map_tables(m.mem, m.arch.swapper_pg_dir) == {"pud": 1, "pmd": 0, "pte": 0}


def test_block_policy_tail_uses_contpmd_then_pmd() -> None:
    """block, 3G + 34M: three 1G blocks, one 32M contiguous run and one 2M block."""
    m = _boot(3 * SZ_1G + 34 * (1 << 20), "block")
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert maps == {"1G": 3, "32M": 1, "2M": 1, "64K": 0, "4K": 0}


def test_rodata_ro_splits_only_around_swapper_pg_dir() -> None:
    """mark_rodata_ro on a block map splits one 1G block down to the one page it changes."""
    m = _boot(4 * SZ_1G, "block", rodata_ro=True)
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert maps == {"1G": 3, "32M": 31, "2M": 15, "64K": 31, "4K": 16}
