"""The batched leaf evaluations of Cpu (``leaf_entries``, ``_walk_run``) take a short cut
when every descriptor of a run carries the same attributes (fresh PTEs from one
template, a linear-map run): the result must equal the one-descriptor evaluation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.cpu import Cpu, walk_leaf
from kpsim.hw.arm64.mmu import walk_entry
from kpsim.machine import boot

PAGE = d.VALID | d.TYPE | d.AF | d.SH_INNER
TEMPLATES = {
    "rw_user": PAGE | d.AP_USER | d.NG | d.PXN | d.DBM,
    "ro_user": PAGE | d.AP_USER | d.AP_RDONLY | d.NG | d.PXN,
    "kernel_pkey": PAGE | d.PXN | d.UXN | (3 << d.POINDEX_SHIFT),
    "no_af": d.VALID | d.TYPE | d.AP_USER,
    "invalid": d.AP_USER | d.AF,
    "contiguous": PAGE | d.CONT,
    "none": 0,
}
STRIPS = {"none": 0, "pxn_table": d.PXN_TABLE, "ap_ro_table": d.AP_TABLE_RDONLY | d.UXN_TABLE}


def one_by_one(cpu: Cpu, descs: np.ndarray, strip: int) -> list[object]:
    """Each descriptor alone (a one-element call never takes the short cut)."""
    return [cpu.leaf_entries(descs[i : i + 1], strip)[0] for i in range(len(descs))]


@pytest.mark.parametrize("strip", STRIPS.values(), ids=list(STRIPS))
@pytest.mark.parametrize("template", TEMPLATES.values(), ids=list(TEMPLATES))
def test_uniform_leaves_match_one_by_one(template: int, strip: int) -> None:
    m = boot(memory="256M", cpus=1)
    cpu = m.hw.cpus[0]
    oas = np.arange(0x4000_0000, 0x4000_0000 + 40 * 4096, 4096, dtype=np.uint64)
    descs = oas | np.uint64(template) if template else np.zeros(40, dtype=np.uint64)
    got = cpu.leaf_entries(descs, strip)
    assert got == one_by_one(cpu, descs, strip)
    leaf = walk_leaf(int(descs[0]), strip)
    if template & d.CONT or leaf is None:
        assert got == [None] * 40
    else:
        assert got[0] == leaf
        assert [e[0] for e in got] == oas.tolist()  # type: ignore[index]


def test_mixed_leaves_match_one_by_one() -> None:
    """Negative control of the short cut: mixed attributes take the general path."""
    m = boot(memory="256M", cpus=1)
    cpu = m.hw.cpus[0]
    kinds = list(itertools.islice(itertools.cycle(TEMPLATES.values()), 50))
    descs = np.array(
        [(0x4000_0000 + i * 4096) | t if t else 0 for i, t in enumerate(kinds)], dtype=np.uint64
    )
    for strip in STRIPS.values():
        got = cpu.leaf_entries(descs, strip)
        assert got == one_by_one(cpu, descs, strip)
        assert any(e is None for e in got) and any(e is not None for e in got)


@pytest.mark.parametrize("where", ["free_pages", "page_tables"])
def test_walk_run_matches_walk_entry(where: str) -> None:
    """``_walk_run`` of linear-map pages equals one walk per page, whether the run has
    one attribute set (free pages) or several (pkeyed page-table pages among others)."""
    m = boot(memory="256M", cpus=1)
    cpu = m.hw.cpus[0]
    layout = m.arch.layout
    if where == "free_pages":
        pfn0 = next(pfn for _, pfn, take in m.k.page_alloc.plan_bulk(4096) if take >= 32)
        run = list(range(pfn0, pfn0 + 32))  # a free block: one attribute set
    else:
        pfn0 = max(m.k.pgtable.live)  # a keyed table page among other pages
        run = list(range(pfn0 & ~0x1FF, (pfn0 & ~0x1FF) + 512))
    vas = [int(layout.pfn_to_virt(p)) for p in run]
    vas = [v for v in vas if v >> 21 == vas[0] >> 21]
    ov = np.array(cpu.por_el1_in_effect, dtype=np.int64)
    cols = cpu._walk_run(vas, ov)
    assert cpu.ttbr1 is not None
    walked = [walk_entry(m.mem, cpu.ttbr1, va) for va in vas]
    k = len(cols[0])
    for i in range(k):
        e = walked[i]
        assert not isinstance(e, int)
        assert (cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i]) == (
            e[5],
            e[1],
            e[2],
            e[3],
            e[0],
        )
        assert cols[5][i] == e[0] >> 12
    if k < len(vas):  # stopped at a page an EL1 write would fault on (or a span)
        e = walked[k]
        assert isinstance(e, int) or e[5] & d.CONT or not e[1] & int(ov[e[3]]) & 4
    if where == "free_pages":
        assert k == len(vas)
    else:
        attrs = {c & ~d.OA_MASK for c in cols[0]}
        assert len(attrs) > 1 or k < len(vas)  # not the one-attribute short cut


def test_uniform_walk_columns_match_walk_run() -> None:
    """The array form of a one-shape run (``_walk_uniform``) gives back exactly
    ``_walk_run``'s columns; a run with keyed table pages among others has no such form."""
    from kpsim.hw.arm64.cpu import _UniformRun

    m = boot(memory="256M", cpus=1)
    cpu = m.hw.cpus[0]
    layout = m.arch.layout
    ov = np.array(cpu.por_el1_in_effect, dtype=np.int64)
    pfns = [p for _, pfn, take in m.k.page_alloc.plan_bulk(600) for p in range(pfn, pfn + take)]
    vas = [int(layout.pfn_to_virt(p)) for p in pfns]
    r = np.asarray(vas, dtype=np.uint64) >> np.uint64(21)
    cuts = [0, *(np.flatnonzero(r[1:] != r[:-1]) + 1).tolist(), len(vas)]
    uniform = cpu._walk_uniform(vas, cuts, ov)
    assert uniform is not None
    descs, leaf = uniform
    run = _UniformRun(descs, np.zeros(len(descs), dtype=np.int64), leaf[1], leaf[2])
    want = [cpu._walk_run(vas[a:b], ov) for a, b in itertools.pairwise(cuts)]
    assert run.columns(len(descs)) == tuple(
        list(itertools.chain(*(w[i] for w in want))) for i in range(6)
    )
    pfn0 = max(m.k.pgtable.live)  # negative control: keyed table pages among free ones
    mixed = [int(layout.pfn_to_virt(p)) for p in range(pfn0 & ~0x1FF, (pfn0 & ~0x1FF) + 512)]
    assert cpu._walk_uniform(mixed, [0, len(mixed)], ov) is None
