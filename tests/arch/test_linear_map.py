"""Linear-map table counts by policy and memory size against the architecture's arithmetic."""

from __future__ import annotations

import pytest

from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.report.linear_map import linear_map_mappings, linear_map_tables

SZ_1G = 1 << 30
SZ_2M = 2 << 20


#: map_mem maps the linear alias of [_stext, __init_begin) (text 8M + rodata 4M, at the
#: DRAM base) on its own with NO_CONT_MAPPINGS only: six 2M blocks whatever the policy
KALIAS_BLOCKS = 6


def _boot(memory: int, policy: str, rodata_ro: bool = False) -> Machine:
    cfg = MachineConfig(memory=memory, linear_map=policy, hardened_pgtables=False)
    return Machine.boot(cfg, rodata_ro=rodata_ro)


@pytest.mark.parametrize("gib", [1, 3, 4])
def test_pte_policy_needs_one_pte_table_per_2m(gib: int) -> None:
    """pte: one level-3 table per 2 MiB, one PMD table per GiB, every page a 4K leaf,
    except the image's text+rodata alias (2M blocks, as Linux's map_mem leaves it)."""
    m = _boot(gib * SZ_1G, "pte")
    tables = linear_map_tables(m.mem, m.arch.swapper_pg_dir)
    assert tables == {"pud": 1, "pmd": gib, "pte": gib * SZ_1G // SZ_2M - KALIAS_BLOCKS}
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    pages = gib * SZ_1G // 4096 - KALIAS_BLOCKS * 512
    assert maps == {"1G": 0, "32M": 0, "2M": KALIAS_BLOCKS, "64K": 0, "4K": pages}


def test_4g_pte_machine_has_2048_linear_pte_tables_and_kimage_ones() -> None:
    """4 GiB pte: 2048 linear-map PTE tables less the image alias's 6 blocks, plus the
    image's 8 static ones."""
    m = _boot(4 * SZ_1G, "pte")
    assert m.k.pgtable.count("kernel")["pte"] == 2048 - KALIAS_BLOCKS + 8


def test_block_policy_maps_1g_aligned_machine_with_1g_blocks() -> None:
    """block on a 1 GiB-aligned 4 GiB machine: 1G blocks except the first GiB, which holds
    the image: its alias as six 2M blocks, then 2M blocks to 32M, then 32M runs."""
    m = _boot(4 * SZ_1G, "block")
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert maps == {"1G": 3, "32M": 31, "2M": KALIAS_BLOCKS + 10, "64K": 0, "4K": 0}
    assert linear_map_tables(m.mem, m.arch.swapper_pg_dir) == {"pud": 1, "pmd": 1, "pte": 0}


def test_block_policy_tail_uses_contpmd_then_pmd() -> None:
    """block, 3G + 34M: two 1G blocks (and the image's GiB), one 32M contiguous run and
    one 2M block in the tail."""
    m = _boot(3 * SZ_1G + 34 * (1 << 20), "block")
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert maps == {"1G": 2, "32M": 31 + 1, "2M": KALIAS_BLOCKS + 10 + 1, "64K": 0, "4K": 0}


def test_read_only_image_alias_splits_nothing() -> None:
    """mark_linear_text_alias_ro and mark_rodata_ro rewrite the image alias's 2M blocks
    in place: the linear map keeps the shape map_mem gave it, no split counted."""
    m = _boot(4 * SZ_1G, "block", rodata_ro=True)
    maps = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    assert maps == {"1G": 3, "32M": 31, "2M": KALIAS_BLOCKS + 10, "64K": 0, "4K": 0}
    c = m.counters
    assert (c["split_pud"], c["split_pmd"], c["split_cont"]) == (0, 0, 0)
