"""Vectorised user faults (kpsim.mm.fault_batch) leave the machine exactly as the
one-address-at-a-time loop does: counters, TLBs, allocator, page state and RAM."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from kpsim.errors import KpsimError
from kpsim.machine import boot
from kpsim.mm import fault_batch
from kpsim.mm import madvise as madv
from kpsim.mm import mmap as mm_
from kpsim.mm.process import Process, mm_context

from .user_rig import buddy_state

M = 1 << 20
RW = mm_.PROT_READ | mm_.PROT_WRITE
BASE = 0x7F00_0000_0000
FIXED = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS | mm_.MAP_FIXED_NOREPLACE


def tlb_state(tlb: Any) -> dict[int, tuple[Any, ...]]:
    return {k: (*e[:6], e[6].tobytes()) for k, e in tlb.items()}


def state(m: Any, procs: list[Process]) -> dict[str, Any]:
    """Everything a fault can change, in comparable form."""
    ctx = mm_context(m.k, m.arch)
    cpus = m.hw.cpus
    return {
        "counters": dict(m.counters),
        "k": dict(m.k.counters),
        "cpu": [(c.counters(), dict(c.faults), c.por_el1, c.por_el0, c._ov1, c._ov0) for c in cpus],
        "tlb": [tlb_state(c.tlb) for c in cpus],
        "spans": [dict(c.tlb.spans) for c in cpus],
        "alloc": buddy_state(m.k.page_alloc),
        "pa_counters": dict(m.k.page_alloc.counters),
        "mapcount": ctx.mapcount.tobytes(),
        "kind": ctx.kind.tobytes(),
        "frames": {pfn: f.tobytes() for pfn, f in m.mem.frames.items()},
        "mm": [
            (
                p.mm.rss_anon,
                p.mm.rss_file,
                [dict(t) for t in p.mm.tables],
                dict(p.mm.thp),
                [(v.start, v.end, v.anon_vma) for v in p.mm.vmas],
            )
            for p in procs
        ],
        "warnings": len(m.k.warnings) if hasattr(m.k, "warnings") else 0,
        "inject": None if m.k.fault_inject is None else m.k.fault_inject.as_dict(),
    }


Script = Callable[[Any, list[Process]], None]


def run(script: Script, batch: bool, monkeypatch: pytest.MonkeyPatch, **cfg: Any) -> Any:
    monkeypatch.setattr(fault_batch, "BATCH", batch)
    m = boot(memory=cfg.pop("memory", "256M"), cpus=2, **cfg)
    mm_context(m.k, m.arch)
    procs = [Process.create(m)]
    err = None
    try:
        script(m, procs)
    except KpsimError as exc:
        err = type(exc).__name__
    return state(m, procs), err


def same(script: Script, monkeypatch: pytest.MonkeyPatch, **cfg: Any) -> Any:
    one, err1 = run(script, False, monkeypatch, **dict(cfg))
    many, err2 = run(script, True, monkeypatch, **dict(cfg))
    assert err1 == err2
    for key in one:
        assert one[key] == many[key], key
    return one


def write_4m(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    p.mmap(BASE, 4 * M, RW, FIXED)
    p.touch_range(BASE + 4096, 4 * M - 4096, 4096, write=True)
    p.touch_range(BASE, 4 * M, 4096, write=True)  # now all present: hits


def read_then_write(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    p.mmap(BASE, 3 * M, RW, FIXED)
    p.touch_range(BASE, 3 * M, 4096, write=False)  # zero page
    p.touch_range(BASE, 2 * M, 8192, write=True)  # COW faults: one by one


def strides(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    p.mmap(BASE, 6 * M, RW, FIXED)
    p.touch_range(BASE + 100, 2 * M, 1000, write=True)  # several accesses per page
    p.touch_range(BASE + 2 * M + 8, 2 * M, 12288, write=True)
    p.touch_range(BASE + 4 * M, 2 * M, 4096 * 3 + 5, write=False)


def partial_and_prot_none(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    p.mmap(BASE, 4 * M, RW, FIXED)
    for off in (0, 5, 17, 300, 511):
        p.touch(BASE + off * 4096, write=True)
    p.mprotect(BASE + 40 * 4096, 8 * 4096, mm_.PROT_READ)
    p.touch_range(BASE, 4 * M, 4096, write=False)
    p.touch_range(BASE, 40 * 4096, 4096, write=True)


def fork_and_cow(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    p.mmap(BASE, 2 * M, RW, FIXED)
    p.touch_range(BASE, 2 * M, 4096, write=True)
    c = p.fork()
    ps.append(c)
    c.touch_range(BASE, 2 * M, 4096, write=False)
    p.touch_range(BASE, M, 4096, write=True)
    p2 = Process.create(m, cpu=1)
    ps.append(p2)
    p2.mmap(BASE, 2 * M, RW, FIXED)
    p2.touch_range(BASE, 2 * M, 4096, write=True)


def thp_and_fragmented(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    a = p.mmap(None, 8 * M, RW)
    p.madvise(a, 4 * M, madv.MADV_HUGEPAGE)
    held = [m.k.page_alloc.alloc_pages(0, o) for o in (0, 3, 0, 5, 1, 0, 2)]
    for pfn, o in list(zip(held, (0, 3, 0, 5, 1, 0, 2), strict=True))[::2]:
        m.k.page_alloc.free_pages(pfn, o)
    p.touch_range(a, 8 * M, 4096, write=True)
    p.munmap(a + M, 3 * M)
    p.touch_range(a, 8 * M, 4096 * 7, write=False)


def reuse_dirty_pages(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    p.mmap(BASE, 2 * M, RW, FIXED)
    p.touch_range(BASE + 8, M, 512, write=True)  # several dirty bytes per page
    p.munmap(BASE, 2 * M)  # freed pages keep their old bytes in RAM
    p.mmap(BASE + 8 * M, 4 * M, RW, FIXED)
    p.touch_range(BASE + 8 * M, 4 * M, 4096, write=True)  # recycled and fresh frames
    assert p.read_byte(BASE + 8 * M + 8) == 0


def global_and_stale_user_entries(m: Any, ps: list[Process]) -> None:
    """A global TLB entry for a user-half page and a stale ASID entry: the batch's
    all-miss shortcut must see both (the accesses hit them, as the loop's do)."""
    p = ps[0]
    p.mmap(BASE, 6 * M, RW, FIXED)
    p.touch(BASE, write=True)  # the tables, and a TLB entry for BASE
    p.touch(BASE + 2 * M, write=True)
    cpu = m.hw.cpus[0]
    tlb = cpu.tlb
    entry = tlb.get(((cpu.asid + 1) << 52) | (BASE >> 12))
    assert entry is not None
    tlb.insert((BASE + 7 * 4096) >> 12, entry, 12)  # global, user half: BASE's frame
    p.munmap(BASE + 2 * M, 4096)  # flushed: no stale entry
    p.touch(BASE + 2 * M + 4096, write=True)
    stale = tlb.get(((cpu.asid + 1) << 52) | ((BASE + 2 * M + 4096) >> 12))
    assert stale is not None
    tlb.insert(((cpu.asid + 1) << 52) | ((BASE + 2 * M + 9 * 4096) >> 12), stale, 12)
    p.touch_range(BASE + 4096, 4 * M - 4096, 4096, write=True)
    assert p.read_byte(BASE) == 0xA5  # the global entry's page took the write


def out_of_memory(m: Any, ps: list[Process]) -> None:
    p = ps[0]
    pa = m.k.page_alloc
    while pa.nr_free > 3000:  # leave about 12 MiB free
        pa.alloc_pages(0, 10 if pa.nr_free > 5000 else 0)
    a = p.mmap(None, 32 * M, RW)
    p.touch_range(a, 32 * M, 4096, write=True)


def faults_that_meet_injection(m: Any, ps: list[Process]) -> None:
    """Runs of write faults, each retried past its -ENOMEM as a process would."""
    p = ps[0]
    a = p.mmap(None, 16 * M, RW)
    for _ in range(3):
        for off in range(0, 16 * M, 2 * M):
            with contextlib.suppress(KpsimError):
                p.touch_range(a + off, 2 * M, 4096, write=True)


SCRIPTS = [write_4m, read_then_write, strides, partial_and_prot_none, fork_and_cow,
           thp_and_fragmented, reuse_dirty_pages, global_and_stale_user_entries]  # fmt: skip
CONFIGS = {
    "kpkeys+batching": {},
    "kpkeys-no-batching": {"batching": False},
    "no-kpkeys": {"hardened_pgtables": False},
    "no-kpkeys-block-map": {"hardened_pgtables": False, "linear_map": "block"},
}


@pytest.mark.parametrize("cfg", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.__name__ for s in SCRIPTS])
def test_batched_faults_match_one_by_one(script: Script, cfg: str, monkeypatch) -> None:
    """Every counter, TLB entry, free list, page count and frame matches the loop."""
    got = same(script, monkeypatch, **CONFIGS[cfg])
    assert got["k"]["pgfault"] > 0


def test_batched_faults_match_out_of_memory(monkeypatch) -> None:
    """Running out of memory mid-table: the batch stops where the loop would fail."""
    got = same(out_of_memory, monkeypatch, memory="256M")
    assert got["pa_counters"].get("alloc_fail", 0) > 0


def slot_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The addresses each :func:`fault_batch.touch_slot` call did, as it is called."""
    done: list[int] = []
    orig = fault_batch.touch_slot

    def spy(*a: Any, **kw: Any) -> Any:
        out = orig(*a, **kw)
        done.append(out[0])
        return out

    monkeypatch.setattr(fault_batch, "touch_slot", spy)
    return done


INJECT = {"fail_page_alloc": "probability=3,times=-1"}
#: the scripts that allocate only through faults (thp_and_fragmented holds pages itself)
INJECTED = [s for s in SCRIPTS if s is not thp_and_fragmented] + [faults_that_meet_injection]


@pytest.mark.parametrize("script", INJECTED, ids=[s.__name__ for s in INJECTED])
def test_batched_faults_match_one_by_one_under_injection(script: Script, monkeypatch) -> None:
    """Under fail_page_alloc the batch draws each page's decision in the loop's order
    (``FaultAttr.alloc_page_run``): the same pages fail, with the same state after."""
    got = same(script, monkeypatch, **INJECT)
    assert got["k"]["pgfault"] > 0


def test_injection_really_meets_the_batch(monkeypatch) -> None:
    """The batch runs under injection and stops short of an injected failure; the
    failure is delivered to the next fault, not lost (negative control: without the
    pending draw the batch would skip the failure the loop meets)."""
    done = slot_calls(monkeypatch)
    got, _ = run(faults_that_meet_injection, True, monkeypatch, **INJECT)
    attr = got["inject"]["page_alloc"]
    assert attr["injected"] > 0
    assert sum(done) > 0 and any(0 < d < 511 for d in done)  # batches cut by a failure
    m = boot(memory="256M", **INJECT)
    fa = m.k.page_alloc.fail_page_alloc
    assert fa is not None
    n = fa.alloc_page_run(0, 0, 10_000)
    assert n < 10_000 and fa.pending  # a failure drawn ahead and held
    assert fa.alloc_page_run(0, 0, 5) == 0  # nothing passes while one is pending
    assert m.k.page_alloc.alloc_pages(0) is None and not fa.pending  # delivered here


def test_batch_really_runs_and_counts_guards(monkeypatch) -> None:
    """The batch path is taken (fewer Python-level faults) and still counts one guarded
    write, two POR_EL1 writes and one translation fault per page."""
    calls = slot_calls(monkeypatch)
    m = boot(memory="256M", cpus=2)
    p = Process.create(mm_context(m.k, m.arch))
    p.mmap(BASE, 2 * M, RW, FIXED)
    before = dict(m.counters)
    p.touch_range(BASE, 2 * M, 4096, write=True)
    after = m.counters
    assert sum(calls) == 511  # the first fault made the table, the rest in one batch
    assert after["pgfault"] - before.get("pgfault", 0) == 512
    assert after["fault_translation"] - before.get("fault_translation", 0) == 512
    assert after["kpkeys_guard_entries"] - before.get("kpkeys_guard_entries", 0) >= 512
    assert after["por_write"] - before.get("por_write", 0) >= 1024


def test_state_comparison_detects_a_difference(monkeypatch) -> None:
    """Negative control: the comparison sees one extra page touched."""
    a, _ = run(write_4m, True, monkeypatch)

    def more(m: Any, ps: list[Process]) -> None:
        write_4m(m, ps)
        ps[0].touch(BASE + 4 * M - 1, write=False)  # a hit: one more load

    b, _ = run(more, True, monkeypatch)
    assert a["cpu"] != b["cpu"]
    assert np.array_equal(np.frombuffer(a["kind"], np.int8), np.frombuffer(b["kind"], np.int8))
