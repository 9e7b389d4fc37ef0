"""ASID allocation (arch/arm64/mm/context.c): live ASIDs are never handed out twice, and
a wrap of the counter (rollover) invalidates every TLB."""

from __future__ import annotations

import kpsim
from kpsim.mm import mmap as mm_
from kpsim.mm.mm_types import MmContext
from kpsim.mm.process import Process, mm_context

VA = 0x10_0000_0000
RW = mm_.PROT_READ | mm_.PROT_WRITE
FLAGS = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS | mm_.MAP_FIXED


def _proc(ctx: MmContext, value: int) -> Process:
    p = Process.create(ctx, stack=False)
    p.mmap(VA, 4096, RW, FLAGS)
    p.touch(VA, write=True, value=value)
    return p


def _three_then_reuse(ctx: MmContext) -> tuple[Process, Process]:
    ctx.asid_max = 3
    p1, p2, _p3 = _proc(ctx, 0x11), _proc(ctx, 0x22), _proc(ctx, 0x33)
    p2.exit()
    p4 = _proc(ctx, 0x44)  # the counter wraps here
    return p1, p4


def test_a_live_asid_is_never_reused_and_the_rollover_flushes():
    m = kpsim.boot(memory="256M", cpus=1)
    ctx = mm_context(m.k, m.arch)
    before = m.counters["tlbi_all"]
    p1, p4 = _three_then_reuse(ctx)
    assert p4.mm.asid == 2 and p1.mm.asid == 1  # 1 and 3 are live: 2 is the free one
    assert m.counters["asid_rollover"] == 1 and m.counters["tlbi_all"] == before + 1
    assert p1.read_byte(VA) == 0x11 and p4.read_byte(VA) == 0x44


def test_negative_control_a_shared_asid_reads_another_process_memory(monkeypatch):
    """With a plain wrapping counter (the old allocator), the new process gets ASID 1,
    the live p1's, and its access hits p1's TLB entry: it reads p1's page."""
    m = kpsim.boot(memory="256M", cpus=1)
    ctx = mm_context(m.k, m.arch)

    def plain(self: MmContext) -> int:
        asid = self.next_asid
        self.next_asid = asid % self.asid_max + 1
        return asid

    monkeypatch.setattr(MmContext, "alloc_asid", plain)
    ctx.asid_max = 3
    p1 = _proc(ctx, 0x11)
    _proc(ctx, 0x22)
    _proc(ctx, 0x33)
    p4 = Process.create(ctx, stack=False)
    p4.mmap(VA, 4096, RW, FLAGS)
    assert p4.mm.asid == p1.mm.asid == 1
    assert p4.read_byte(VA) == 0x11  # p1's data through p1's cached translation
