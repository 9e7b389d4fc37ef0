"""The scalar fast paths added for trace-replay speed leave exactly what the general
paths leave: the same tables (every entry), RAM, TLBs and walk caches, allocator
lists, page map counts and kinds, RSS, counters (kernel, allocator, hardware) and
gather flushes.

- ``memory._zap_small`` (a PTE table with few entries zapped with Python scalars)
  against the whole-array ``zap_pte_range`` (``ZAP_SMALL = 0``), including its
  fallback for THP frames and a gather that runs full;
- ``fork._account_small`` (copy_pte_range's accounting of a few entries) against
  the whole-array accounting (``COPY_SMALL = 0``), with its THP fallback;
- ``memory.put_page`` (do_wp_page's one-page put) against ``put_pages``;
- ``Process.kernel`` / ``on_cpu`` as plain context managers: the CPU and the current
  task as the generator-based ones left them, also when entry fails;
- ``mmap``'s VMA flags computed on ints against the VmFlags arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kpsim.mm import fork as fork_mod
from kpsim.mm import madvise as madvise_mod
from kpsim.mm import memory as mem_mod
from kpsim.mm import mmap as mm_
from kpsim.mm.mm_types import PAGE_SIZE, VmFlags
from kpsim.mm.mmu_gather import MAX_GATHER_BATCH, MAX_GATHER_BATCH_COUNT, MMU_GATHER_BUNDLE

from .user_rig import RW, M, T, buddy_state, machine, proc, region


def _state(m: Any, ps: list[Any]) -> dict[str, Any]:
    ctx = ps[0].ctx
    return {
        "counters": m.counters.snapshot(),
        "frames": {pfn: f.tobytes() for pfn, f in m.mem.frames.items()},
        "tlb": [sorted((k, e[:6], e[6].tobytes()) for k, e in c.tlb.items()) for c in m.hw.cpus],
        "walks": [{t: dict(w) for t, w in c.tlb.walks.items()} for c in m.hw.cpus],
        "spans": [dict(c.tlb.spans) for c in m.hw.cpus],
        "alloc": buddy_state(m.k.page_alloc),
        "memmap": {p: repr(pg) for p, pg in m.k.page_alloc.memmap.pages.items()},
        "live": dict(m.k.pgtable.live),
        "mapcount": ctx.mapcount.tobytes(),
        "kind": ctx.kind.tobytes(),
        "mm": [
            (
                p.alive,
                p.mm.rss_anon,
                p.mm.rss_file,
                [dict(t) for t in p.mm.tables],
                dict(p.mm.thp),
                [(v.start, v.end, v.flags, v.anon_vma) for v in p.mm.vmas],
            )
            for p in ps
        ],
        "warnings": list(m.k.warnings),
    }


def _mixed() -> dict[str, Any]:
    """Zaps of every kind of small table: anonymous, zero-page (the same pfn many
    times), file (private COW and shared), PROT_NONE (present, not valid), a split THP
    (the fallback), partial munmaps and MADV_DONTNEED, then fork + COW + exits."""
    m = machine("256M")
    p = proc(m)
    region(p, T, 4 * M)
    p.touch_range(T, 40 * PAGE_SIZE, PAGE_SIZE, write=True)
    p.touch_range(T + 64 * PAGE_SIZE, 24 * PAGE_SIZE, PAGE_SIZE, write=False)  # zero page
    p.touch_range(T + M, 300 * PAGE_SIZE, PAGE_SIZE, write=True)  # a large table
    p.mprotect(T + 8 * PAGE_SIZE, 4 * PAGE_SIZE, mm_.PROT_NONE)
    f = p.ctx.new_file(4 * M)
    fa = p.mmap(T + 8 * M, 64 * PAGE_SIZE, RW, mm_.MAP_PRIVATE | mm_.MAP_FIXED, f)
    p.touch_range(fa, 32 * PAGE_SIZE, PAGE_SIZE, write=False)
    p.touch_range(fa, 8 * PAGE_SIZE, 2 * PAGE_SIZE, write=True)
    fb = p.mmap(T + 12 * M, 16 * PAGE_SIZE, RW, mm_.MAP_SHARED | mm_.MAP_FIXED, f)
    p.touch_range(fb, 16 * PAGE_SIZE, PAGE_SIZE, write=True)
    region(p, T + 32 * M, 4 * M)  # THPs: one split by a partial munmap (PTE-mapped)
    p.madvise(T + 32 * M, 4 * M, madvise_mod.MADV_HUGEPAGE)
    p.touch(T + 32 * M, write=True)
    p.touch(T + 34 * M, write=True)
    p.munmap(T + 32 * M + 100 * PAGE_SIZE, 8 * PAGE_SIZE)
    p.munmap(T + 32 * M + 300 * PAGE_SIZE, 4 * PAGE_SIZE)
    p.munmap(T + 32 * M + 20 * PAGE_SIZE, 4 * PAGE_SIZE)  # a small VMA of the split THP
    p.munmap(T + 4 * PAGE_SIZE, 3 * PAGE_SIZE)
    p.madvise(T + 64 * PAGE_SIZE, 10 * PAGE_SIZE, madvise_mod.MADV_DONTNEED)
    region(p, T + 16 * M, 64 * PAGE_SIZE)  # a small table: anonymous and zero-page PTEs
    p.touch_range(T + 16 * M, 10 * PAGE_SIZE, PAGE_SIZE, write=True)
    p.touch_range(T + 16 * M + 20 * PAGE_SIZE, 10 * PAGE_SIZE, PAGE_SIZE, write=False)
    c = p.fork()
    for i in range(12, 40, 3):  # COW: copies (do_wp_page's put_page keeps the page)
        c.touch(T + i * PAGE_SIZE, write=True)
    for i in range(13, 40, 3):  # ... then the parent reuses or copies
        p.touch(T + i * PAGE_SIZE, write=True)
    c.munmap(T + 16 * PAGE_SIZE, 8 * PAGE_SIZE)
    c.exit()
    for i in range(24, 40, 2):  # pages c's exit left with one user: reused
        p.touch(T + i * PAGE_SIZE, write=True)
    st = _state(m, [p, c])
    p.exit()
    return {"before_exit": st, "after_exit": _state(m, [p, c])}


def _full_gather() -> dict[str, Any]:
    """A munmap (a gather that flushes ranges) and an exit (a full-mm one) whose small
    tables hold more pages than one gather's batches: the gather runs full inside a
    table and flushes (``tlb_next_batch`` fails)."""
    m = machine("256M")
    p = proc(m)
    slots_cap = MMU_GATHER_BUNDLE + MAX_GATHER_BATCH_COUNT * MAX_GATHER_BATCH
    per = 40
    tables = slots_cap // per + 4
    region(p, T, tables * 2 * M)
    for t in range(tables):
        p.touch_range(T + t * 2 * M, per * PAGE_SIZE, PAGE_SIZE, write=True)
        p.touch_range(T + t * 2 * M + M, per * PAGE_SIZE, PAGE_SIZE, write=True)
    p.munmap(T, tables * 2 * M - M)
    st = _state(m, [p])
    p.exit()
    return {"before_exit": st, "after_exit": _state(m, [p])}


def _compare(
    scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
    module: Any = mem_mod,
    fast_path: str = "_zap_small",
    threshold: str = "ZAP_SMALL",
) -> list[bool]:
    """Run ``scenario`` with ``module.fast_path`` on, then with ``module.threshold`` 0
    (every table through the whole-array path); the states must be equal. Returns
    what the fast path answered each time (True: done; False: fell back)."""
    results: list[bool] = []
    real = getattr(module, fast_path)

    def spy(*a: Any) -> bool:
        ok = bool(real(*a))
        results.append(ok)
        return ok

    monkeypatch.setattr(module, fast_path, spy)
    fast = scenario()
    monkeypatch.setattr(module, threshold, 0)
    calls = len(results)
    reference = scenario()
    assert len(results) == calls  # the control: the reference never took the fast path
    assert fast.keys() == reference.keys()
    for when in fast:
        assert fast[when].keys() == reference[when].keys()
        for key in fast[when]:
            assert fast[when][key] == reference[when][key], (when, key)
    return results


def test_zap_small_matches_whole_table_zap(monkeypatch: pytest.MonkeyPatch) -> None:
    results = _compare(_mixed, monkeypatch)
    assert True in results  # the fast path ran ...
    assert False in results  # ... and fell back for the split THP's frame


def test_fork_account_small_matches_whole_table_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    results = _compare(_mixed, monkeypatch, fork_mod, "_account_small", "COPY_SMALL")
    assert True in results  # the fast path ran ...
    assert False in results  # ... and fell back for the split THP's frame


def test_zap_small_with_a_full_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    flushes: list[int] = []
    real = mem_mod.MmuGather.flush_mmu

    def spy(self: Any) -> None:
        flushes.append(self._batch)
        real(self)

    monkeypatch.setattr(mem_mod.MmuGather, "flush_mmu", spy)
    results = _compare(_full_gather, monkeypatch)
    assert results and all(results)
    assert MAX_GATHER_BATCH_COUNT in flushes  # the control: a gather ran full


@pytest.mark.parametrize("fill", [0, 5, MAX_GATHER_BATCH - 3])
@pytest.mark.parametrize("batch", [0, 1, MAX_GATHER_BATCH_COUNT - 1, MAX_GATHER_BATCH_COUNT])
def test_remove_pte_pages_matches_remove_ptes(
    fill: int, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directly, from gathers near and at full: the same flushes (ranges, strides) and
    the same batch state as :meth:`MmuGather.remove_ptes` with one-page batches."""
    m = machine("256M")
    p = proc(m)
    flushes: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        m.arch, "tlb_flush", lambda *a, **kw: flushes.append((*a, tuple(sorted(kw.items()))))
    )
    rng = np.random.default_rng(batch * 1000 + fill)
    for _ in range(20):
        n = int(rng.integers(1, 48))
        pos = np.sort(rng.choice(512, size=n, replace=False))
        addrs = (T + (pos << 12)).tolist()
        starts = sorted(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False).tolist())
        out = []
        for fast in (True, False):
            flushes.clear()
            g = mem_mod.MmuGather(p.mm)
            g._batch = batch
            g._nr = min(fill, (MMU_GATHER_BUNDLE if batch == 0 else MAX_GATHER_BATCH) - 2)
            if fast:
                g.remove_pte_pages(addrs, starts)
            else:
                arr = np.asarray(starts, dtype=np.int64)
                g.remove_ptes(np.asarray(addrs), arr, np.ones(arr.size, dtype=np.int64))
            g.flush_mmu_tlbonly()
            out.append((list(flushes), g._batch, g._nr, g.flushes))
        assert out[0] == out[1]


def test_put_page_matches_put_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = mem_mod.put_page

    def spy(ctx: Any, pfn: int) -> None:
        calls.append(pfn)
        real(ctx, pfn)

    monkeypatch.setattr(mem_mod, "put_page", spy)
    fast = _mixed()
    assert calls  # the control: do_wp_page put pages one at a time
    monkeypatch.setattr(mem_mod, "put_page", lambda ctx, pfn: mem_mod.put_pages(ctx, [pfn]))
    reference = _mixed()
    for when in fast:
        for key in fast[when]:
            assert fast[when][key] == reference[when][key], (when, key)


def test_put_page_frees_as_put_pages_does() -> None:
    """Directly: a page with other mappings left, and one whose last mapping goes."""
    out = []
    for one in (True, False):
        m = machine("256M")
        p = proc(m)
        ctx = p.ctx
        with p.kernel():
            kept = mem_mod.alloc_user_page(ctx)
            freed = mem_mod.alloc_user_page(ctx)
        assert kept is not None and freed is not None
        ctx.mapcount[kept - ctx.base_pfn] = 2
        ctx.mapcount[freed - ctx.base_pfn] = 1
        for pfn in (kept, freed):
            if one:
                mem_mod.put_page(ctx, pfn)
            else:
                mem_mod.put_pages(ctx, [pfn])
        assert m.k.page_alloc.is_allocated(kept) and not m.k.page_alloc.is_allocated(freed)
        out.append(_state(m, [p]))
    assert out[0] == out[1]


def test_kernel_section_switches_and_restores() -> None:
    m = machine("256M")
    a = proc(m)
    b = type(a).create(m, "b", cpu=1, stack=False)
    arch = m.arch
    before = arch.cpu_id
    with b.kernel():
        assert arch.cpu_id == 1
        assert arch.current() is b.task
        with a.kernel():  # nested: another CPU, then back
            assert arch.cpu_id == a.cpu
            assert arch.current() is a.task
        assert arch.cpu_id == 1
    assert arch.cpu_id == before
    with pytest.raises(RuntimeError), a.kernel():
        raise RuntimeError("inside")
    assert arch.cpu_id == before
    section = a.kernel()
    with section, pytest.raises(RuntimeError, match="entered twice"), section:
        pass  # pragma: no cover - never entered
    assert arch.cpu_id == before
    b.exit()
    with pytest.raises(ProcessLookupError), b.kernel():
        pass  # pragma: no cover - never entered
    assert arch.cpu_id == before


def test_kernel_section_restores_the_cpu_when_switch_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = machine("256M")
    a = proc(m)
    b = type(a).create(m, "b", cpu=1, stack=False)
    arch = m.arch
    before = arch.cpu_id
    running = arch.percpu[1].current
    assert running is not b.task and a.cpu != 1
    calls: list[int] = []

    def boom(cpu: int, nxt: Any) -> None:
        calls.append(cpu)
        raise RuntimeError("switch_to failed")

    monkeypatch.setattr(arch, "switch_to", boom)
    with pytest.raises(RuntimeError, match="switch_to failed"), b.kernel():
        pass  # pragma: no cover - never entered
    assert calls == [1]  # entry tried to make b current on its CPU ...
    assert arch.cpu_id == before  # ... and left the CPU section when that failed
    assert arch.percpu[1].current is running


def _enum_flags(prot: int, flags: int, file: bool) -> VmFlags:
    """The VM flags of a new mapping, computed with VmFlags arithmetic (the reference)."""
    vm = VmFlags.NONE
    for bit, f in ((mm_.PROT_READ, VmFlags.READ), (mm_.PROT_WRITE, VmFlags.WRITE)):
        if prot & bit:
            vm |= f
    if prot & mm_.PROT_EXEC:
        vm |= VmFlags.EXEC
    vm |= VmFlags.MAYREAD | VmFlags.MAYWRITE | VmFlags.MAYEXEC
    shared = bool(flags & mm_.MAP_SHARED)
    if shared:
        vm |= VmFlags.SHARED | VmFlags.MAYSHARE
    if not file and not shared:
        vm |= VmFlags.ANON
    if flags & mm_.MAP_NORESERVE:
        vm |= VmFlags.NORESERVE
    if vm & (VmFlags.NORESERVE | VmFlags.SHARED | VmFlags.WRITE) == VmFlags.WRITE:
        vm |= VmFlags.ACCOUNT
    return vm


@pytest.mark.parametrize("file", [False, True])
@pytest.mark.parametrize("share", [mm_.MAP_PRIVATE, mm_.MAP_SHARED])
@pytest.mark.parametrize("noreserve", [0, mm_.MAP_NORESERVE])
def test_mmap_flags_match_vmflags_arithmetic(file: bool, share: int, noreserve: int) -> None:
    m = machine("256M")
    p = proc(m)
    f = p.ctx.new_file(1 << 30) if file else None
    flags = share | noreserve | mm_.MAP_FIXED | (0 if file else mm_.MAP_ANONYMOUS)
    for prot in range(8):
        addr = T + prot * 4 * M  # apart: no merging with the previous one
        p.mmap(addr, 16 * PAGE_SIZE, prot, flags, f)
        vma = p.mm.find_vma(addr)
        assert vma is not None and vma.start == addr
        want = _enum_flags(prot, flags, file)
        assert type(vma.flags) is VmFlags
        assert vma.flags == want, (prot, vma.flags, want)
        assert mm_.prot_to_vm(prot) == want & (VmFlags.READ | VmFlags.WRITE | VmFlags.EXEC)
    assert np.all(p.ctx.mapcount >= 0)
