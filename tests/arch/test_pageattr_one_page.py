"""The single-page fast path of change_memory_common (PTE-mapped linear map) against
the general path: same tables, TLBs, CPU registers and counters; a block-mapped
linear map falls back to the general path and splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kpsim.arch.arm64.pageattr import EINVAL, PageattrMixin
from kpsim.hw.arm64 import descriptors as d
from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig


def _boot(**kw: Any) -> Machine:
    return Machine.boot(MachineConfig(memory=256 << 20, cpus=2, **kw))


def _general_only(m: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``m`` take the general path (no PTE found for the fast path)."""
    monkeypatch.setattr(m.arch, "_pte_pa_k", lambda addr: None)


def _state(m: Machine) -> dict[str, Any]:
    """Everything the change can touch: counters, every CPU's TLB and registers, the
    linear map's PTE tables."""
    tables = {}
    for pfn in sorted(m.k.pgtable.live):
        tables[pfn] = bytes(np.asarray(m.arch.read_table(pfn << 12)).tobytes())
    return {
        "k": dict(m.k.counters),
        "hw": m.arch.system.hw_counters(),
        "tlb": [sorted((k, e[:6]) for k, e in c.tlb.items()) for c in m.arch.system.cpus],
        "por": [c.por_el1 for c in m.arch.system.cpus],
        "tables": tables,
        "warnings": list(m.k.warnings),
    }


def _ops(m: Machine) -> list[int]:
    """Run a mix of single-page attribute changes; return their results."""
    a = m.arch
    pfns = [m.k.page_alloc.alloc_pages(0, 0) for _ in range(4)]
    vas = [a.page_to_virt(p) for p in pfns if p is not None]
    out = []
    for va in vas:
        m.arch.cpu.load(va)  # a TLB entry for the flush to drop
        out.append(a.set_memory_pkey(va, 1, 1))
        out.append(a.set_memory_pkey(va, 1, 0))
    out.append(a.set_memory_ro(vas[0], 1))
    out.append(a.set_memory_rw(vas[0], 1))
    out.append(a.set_memory_valid(vas[1], 1, False))
    out.append(a.set_memory_valid(vas[1], 1, True))
    out.append(a.set_direct_map_invalid_noflush(pfns[2]))  # type: ignore[arg-type]
    out.append(a.set_direct_map_default_noflush(pfns[2]))  # type: ignore[arg-type]
    out.append(a.set_memory_pkey(vas[3] + 123, 1, 1))  # unaligned address
    out.append(a.set_memory_pkey(vas[3], 1, 99))  # bad pkey
    # inside an interrupt handler on the other CPU (guarded store, no lazy section)
    out.append(a.interrupt(1, lambda: a.set_memory_pkey(vas[2], 1, 1)))
    # table allocation and free (kpkeys_pgtable_alloc/free key and unkey the page)
    pfn = m.k.pgtable.alloc_table(0, 3, "test")
    assert pfn is not None
    m.k.pgtable.free_table(pfn)
    return out


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"batching": False},
        {"hardened_pgtables": False},
        {"poe": False, "hardened_pgtables": False},
    ],
    ids=["default", "no-batching", "no-hardening", "no-poe"],
)
def test_one_page_fast_path_matches_general_path(
    kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = _boot(**kw), _boot(**kw)
    _general_only(slow, monkeypatch)
    calls: list[int] = []
    real = PageattrMixin._change_one_pte

    def spy(self: PageattrMixin, *args: Any) -> None:
        calls.append(1)
        real(self, *args)

    monkeypatch.setattr(PageattrMixin, "_change_one_pte", spy)
    assert _state(fast) == _state(slow)
    r_fast = _ops(fast)
    n_fast = len(calls)
    r_slow = _ops(slow)
    assert len(calls) == n_fast  # the general-only machine never took the fast path
    assert r_fast == r_slow
    assert EINVAL in r_fast or not fast.arch.system_supports_poe()
    if fast.arch.system_supports_poe():
        assert n_fast > 10  # the fast path did run
    assert _state(fast) == _state(slow)


def test_fast_path_flushes_the_page_from_every_tlb() -> None:
    """The keyed page's stale TLB entry goes (flush_tlb_kernel_range of one page):
    a later access sees the new POIndex; the negative control leaves it stale."""
    m = _boot()
    a = m.arch
    pfn = m.k.page_alloc.alloc_pages(0, 0)
    assert pfn is not None
    va = a.page_to_virt(pfn)
    m.arch.cpu.load(va)
    key = va >> 12
    assert m.arch.cpu.tlb.get(key) is not None
    assert a.set_memory_pkey(va, 1, 1) == 0
    assert all(c.tlb.get(key) is None for c in m.arch.system.cpus)
    m.arch.cpu.load(va)
    assert m.arch.cpu.tlb.get(key)[3] == 1  # type: ignore[index]
    # negative control: the same change without the flush leaves the old entry
    assert a.change_memory_common(va, 1, 0, d.POINDEX_MASK, flush=False) == 0
    assert m.arch.cpu.tlb.get(key)[3] == 1  # type: ignore[index]


def test_block_linear_map_falls_back_to_general_path_with_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = Machine.boot(
        MachineConfig(memory=1 << 30, linear_map="block", hardened_pgtables=False),
        rodata_ro=False,
    )
    calls: list[int] = []
    monkeypatch.setattr(m.arch, "_change_one_pte", lambda *args: calls.append(1))
    pfn = m.k.page_alloc.alloc_pages(0, 0)
    assert pfn is not None
    va = m.arch.page_to_virt(pfn)
    before = dict(m.k.counters)
    assert m.arch.set_memory_pkey(va, 1, 1) == 0
    assert not calls
    split = sum(m.k.counters[k] - before.get(k, 0) for k in ("split_pud", "split_pmd"))
    assert split >= 1
    # the page itself now has POIndex 1 at level 3, its neighbour keeps 0
    pte_pa = m.arch._pte_pa_k(va)
    assert pte_pa is not None
    v = m.k.mem.read64(pte_pa)
    assert (v & d.POINDEX_MASK) >> d.POINDEX_SHIFT == 1
    nb = m.k.mem.read64(pte_pa ^ 8)
    assert (nb & d.POINDEX_MASK) >> d.POINDEX_SHIFT == 0
