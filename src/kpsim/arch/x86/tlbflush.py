"""x86 TLB maintenance as Linux issues it (``arch/x86/mm/tlb.c``).

- ``flush_tlb_kernel_range``: above ``tlb_single_page_flush_ceiling`` (33) pages, a
  full flush on every CPU (``do_flush_tlb_all``); otherwise every CPU runs INVLPG
  per page (``do_kernel_range_flush`` -> ``flush_tlb_one_kernel``). Both go to every
  online CPU by IPI (``on_each_cpu``), counted as one shootdown with ncpus-1 IPIs.
- ``flush_tlb_all``: ``__flush_tlb_all`` on every CPU: INVPCID type 2 (all contexts,
  global entries included) on a CPU with INVPCID.
- user flushes (``flush_tlb_mm_range``): the CPUs running the mm flush now, INVLPG per
  page within the ceiling, else the whole PCID (INVPCID type 1); the initiator
  locally, the others by IPI. A CPU that has the mm's PCID cached but runs another mm
  drops the cached PCID, so its next switch to the mm reloads CR3 with a flush: the
  effect of ``tlb_gen`` catching up lazily in ``switch_mm_irqs_off``.

Counters: ``tlb_flush_kernel_range``, ``tlb_flush_all`` (calls), ``tlb_flush_user``,
and the CPU's ``invlpg``/``invpcid`` and the system's ``tlb_shootdown``/``_ipi``.
Left out: PTI's user PCIDs, INVLPGB (AMD broadcast invalidation), the ``freed_tables``
IPI to lazy CPUs (paging-structure caches are not modelled).
"""

from __future__ import annotations

from functools import partial

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.tlbflush import PAGE_SIZE, GenericTlbFlushMixin
from kpsim.arch.x86.base import X86Base
from kpsim.hw.x86.cpu import INVPCID_ALL_GLOBAL, INVPCID_SINGLE, X86Cpu

#: ``tlb_single_page_flush_ceiling``: pages above which a range flush is a full one
TLB_SINGLE_PAGE_FLUSH_CEILING = 33


@mypyc_attr(native_class=False)  # see ArchBase
class TlbFlushMixin(GenericTlbFlushMixin, X86Base):
    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        counters = self.k.counters
        counters["tlb_flush_kernel_range"] += 1
        start &= ~(PAGE_SIZE - 1)
        if (end - start) > TLB_SINGLE_PAGE_FLUSH_CEILING << 12:
            self.system.shootdown(self.cpu_id, _flush_all)
            counters["tlb_flush_all"] += 1
            return
        self.system.shootdown(self.cpu_id, partial(_invlpg_each, range(start, end, PAGE_SIZE)))

    def flush_tlb_all(self) -> None:
        self.k.counters["tlb_flush_all"] += 1
        self.system.shootdown(self.cpu_id, _flush_all)

    # -- user flushes --------------------------------------------------------------------
    def _mm_pcid(self, cpu_id: int, mm_id: int) -> int | None:
        return self.percpu[cpu_id].pcid_slots.get(mm_id)

    def _flush_tlb_range(
        self, asid: int, start: int, end: int, stride: int, last_level: bool
    ) -> None:
        """``flush_tlb_mm_range`` of the mm with context id ``asid``."""
        full = (end - start) // stride > TLB_SINGLE_PAGE_FLUSH_CEILING
        self._flush_user(asid, None if full else range(start, end, stride))

    def flush_tlb_page(self, asid: int, addr: int) -> None:
        self._flush_user(asid, range(addr & ~(PAGE_SIZE - 1), (addr & ~(PAGE_SIZE - 1)) + 1))

    def flush_tlb_mm(self, asid: int) -> None:
        self._flush_user(asid, None)

    def tlb_flush_fullmm(self, asid: int, freed_tables: bool) -> None:
        """x86 ``tlb_flush`` of a full-mm teardown: the whole mm, and every CPU leaves
        it (a range flush otherwise: ``flush_tlb_mm_range`` over the gathered range)."""
        self.flush_tlb_mm(asid)
        self.leave_mm(asid)

    def _flush_user(self, mm_id: int, pages: range | None) -> None:
        self.k.counters["tlb_flush_user"] += 1
        running = []
        for i, pc in enumerate(self.percpu):
            pcid = pc.pcid_slots.get(mm_id)
            if pcid is None:
                continue
            if pc.loaded_mm is not None and pc.loaded_mm.asid == mm_id:
                running.append((i, pcid))
            else:
                del pc.pcid_slots[mm_id]  # stale: flushed at the next switch to the mm
        remote = sum(1 for i, _ in running if i != self.cpu_id)
        if remote:
            self.system.counters["tlb_shootdown"] += 1
            self.system.counters["tlb_shootdown_ipi"] += remote
        for i, pcid in running:
            c = self.system.cpus[i]
            if pages is None:
                c.invpcid(INVPCID_SINGLE, pcid)
            else:
                for va in pages:
                    c.invlpg(va)

    def leave_mm(self, mm_id: int) -> None:
        """``leave_mm``/``switch_mm(init_mm)``: every CPU with the mm loaded switches CR3
        to ``swapper_pg_dir`` before its tables (its PGD included) are freed, as x86
        does for lazy-TLB CPUs when an mm's tables go."""
        for i, pc in enumerate(self.percpu):
            mm = pc.loaded_mm
            if mm is not None and mm.asid == mm_id:
                self.system.cpus[i].mov_cr3(self.swapper_pg_dir)
                pc.loaded_mm = None
                pc.pcid_slots.pop(mm_id, None)

    def queue_pte_barriers(self) -> None:
        """Nothing on x86: a PTE store needs no barrier before the walker sees it."""


def _invlpg_each(pages: range, c: X86Cpu) -> None:
    """``flush_tlb_one_kernel`` for each page, on ``c``."""
    for va in pages:
        c.invlpg(va)


def _flush_all(c: X86Cpu) -> None:
    c.invpcid(INVPCID_ALL_GLOBAL)
