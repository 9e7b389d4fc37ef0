"""An interrupt that frees a page table in the middle of a batched lazy-MMU section
neither faults nor leaves POR_EL1 in the wrong context (spec §3.6, §4.9).

Checked through the simulated register: the value the handler runs with, the value
after the exception return, and the value when the section ends; the handler's own
table write switches for itself (interrupt-context rule). Negative controls remove,
one at a time, each mechanism that makes this work, and show what then goes wrong.
"""

import pytest

import kpsim.arch.arm64.entry as entry
from kpsim.audit.freewatch import FreeWatch
from kpsim.audit.invariants import audit, linear_pkey
from kpsim.errors import AccessFault
from kpsim.machine import boot
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL

DEFAULT, PGTABLES = 0x17, 0x57


class Scenario:
    """A lazy section on cpu1 writing 8 entries; an IRQ after the 3rd frees ``victim``."""

    def __init__(self, batching=True, handler_extra=None, series="enter-leave"):
        self.m = m = boot(memory="256M", batching=batching, series=series)
        self.victim = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
        self.work = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
        self.seen = {}
        self.handler_extra = handler_extra
        self.writes = 0

    def handler(self):
        m = self.m
        cpu = m.hw.cpus[1]
        self.seen["in_handler"] = cpu.por_el1
        c0 = m.counters["por_write"]
        m.k.pgtable.free_table(self.victim)  # set_memory_pkey: a guarded linear-map write
        self.seen["handler_por_writes"] = m.counters["por_write"] - c0
        self.seen["end_of_handler"] = cpu.por_el1
        if self.handler_extra:
            self.handler_extra(self)

    def hook(self):
        self.writes += 1
        if self.writes == 3:
            cpu = self.m.hw.cpus[1]
            self.seen["before"] = cpu.por_el1
            self.m.arch.interrupt(1, self.handler)
            self.seen["after_return"] = cpu.por_el1

    def run(self):
        m, arch = self.m, self.m.arch
        va = arch.page_to_virt(self.work)
        with arch.on_cpu(1):
            arch.arch_enter_lazy_mmu_mode()
            self.seen["section"] = m.hw.cpus[1].por_el1
            arch.irq_hook = self.hook
            try:
                for i in range(8):
                    arch.set_pte(va + 8 * i, (i + 1) << 12)
            finally:
                arch.irq_hook = None
                arch.arch_leave_lazy_mmu_mode()
            self.seen["section_end"] = m.hw.cpus[1].por_el1
        return self.seen


def test_batched_section_survives_an_irq_that_frees_a_table():
    s = Scenario(batching=True)
    c0 = s.m.counters
    with FreeWatch(s.m) as w:
        seen = s.run()
    c1 = s.m.counters
    assert seen["section"] == PGTABLES and seen["before"] == PGTABLES
    assert seen["in_handler"] == DEFAULT  # entry reset: the handler is not privileged
    assert seen["handler_por_writes"] == 2  # its write switched for itself, and back
    assert seen["end_of_handler"] == DEFAULT
    assert seen["after_return"] == PGTABLES  # the section got its context back
    assert seen["section_end"] == DEFAULT
    assert s.m.hw.cpus[1].por_el1 == DEFAULT and s.m.hw.cpus[0].por_el1 == DEFAULT
    # the table went back to pkey 0 before the buddy allocator got it
    assert w.violations == [] and w.pgtable_pages_to_buddy == 1
    assert linear_pkey(s.m, s.victim) == 0 and s.m.k.page_alloc.is_free(s.victim)
    # register writes: enter 1 + irq entry reset 1 + handler 2 + eret restore 1 + leave 1
    assert c1["por_write"] - c0["por_write"] == 6
    assert all(s.m.mem.read64((s.work << 12) + 8 * i) == (i + 1) << 12 for i in range(8))
    s.m.k.pgtable.free_table(s.work)
    assert audit(s.m) == []


def test_control_without_batching_every_write_switches_and_the_irq_is_just_as_safe():
    s = Scenario(batching=False)
    c0 = s.m.counters["por_write"]
    seen = s.run()
    assert seen["section"] == DEFAULT and seen["before"] == DEFAULT
    assert seen["in_handler"] == DEFAULT and seen["after_return"] == DEFAULT
    assert seen["section_end"] == DEFAULT
    # 8 entries x 2 + the handler's 2 (no entry reset needed: already default)
    assert s.m.counters["por_write"] - c0 == 18


def test_negative_without_the_entry_reset_the_handler_runs_privileged(monkeypatch):
    """Without the exception-entry reset, the handler inherits the page-table context:
    a stray store from it to a table page would land instead of faulting."""

    def no_reset(cpu, por_init):
        cpu.context_sync()
        return cpu.por_el1

    monkeypatch.setattr(entry, "exception_entry_por", no_reset)

    def stray_store(s):
        s.m.hw.cpus[1].store(s.m.arch.page_to_virt(s.work) + 8 * 100, 0xBAD)
        s.seen["stray_landed"] = True

    s = Scenario(batching=True, handler_extra=stray_store)
    seen = s.run()
    assert seen["in_handler"] == PGTABLES
    assert seen.get("stray_landed") is True


def test_control_with_the_entry_reset_the_same_stray_store_faults():
    def stray_store(s):
        with pytest.raises(AccessFault) as exc:
            s.m.hw.cpus[1].store(s.m.arch.page_to_virt(s.work) + 8 * 100, 0xBAD)
        s.seen["overlay_fault"] = exc.value.fault.overlay

    s = Scenario(batching=True, handler_extra=stray_store)
    assert s.run()["overlay_fault"] is True


def test_negative_batching_in_interrupt_context_faults_in_the_handler():
    """The v5 crash: if the handler's table write trusted the interrupted task's batch
    (no interrupt-context rule), it would write from the default context and fault."""
    s = Scenario(batching=True)
    arch = s.m.arch
    arch._guard_needed = lambda: arch.hardened_pgtables and not arch.current().tif_lazy_mmu
    with pytest.raises(AccessFault) as exc:
        s.run()
    assert exc.value.fault.overlay and exc.value.fault.write
    assert s.m.hw.cpus[1].por_el1 == DEFAULT  # the section's leave still ran


def test_negative_without_the_return_restore_the_section_faults_after_the_irq(monkeypatch):
    """If the exception return did not restore the saved value, the rest of the batched
    section would write from the default context and fault."""
    monkeypatch.setattr(entry, "exception_return_por", lambda cpu, *_: cpu.context_sync())
    s = Scenario(batching=True, series="v8")  # enter-leave's guard would switch again
    with pytest.raises(AccessFault) as exc:
        s.run()
    assert exc.value.fault.overlay
    assert s.seen["after_return"] == DEFAULT
