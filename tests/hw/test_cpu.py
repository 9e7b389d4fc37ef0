"""CPU system registers: POR writes need an ISB, TCR2 enables the overlay, counters."""

from __future__ import annotations

import pytest

from kpsim.hw.arm64.cpu import Undefined

from .rig import KERNEL_VA, Rig


def protected_page(por_el1: int = 0x17) -> Rig:
    """A kernel page with pkey 1 and the overlay on under ``por_el1``."""
    rig = Rig(ncpus=2)
    rig.poe_on(por_el1=por_el1)
    rig.poe_on(por_el1=por_el1, cpu=rig.system.cpus[1])
    rig.map(KERNEL_VA, 3, poindex=1)
    return rig


def test_por_el1_write_takes_effect_only_after_isb():
    """Writing POR_EL1 to 0x57 does not open pkey 1 until the ISB."""
    rig = protected_page()
    cpu = rig.cpu
    cpu.write_por_el1(0x57)
    assert cpu.por_el1 == 0x57
    assert cpu.try_store(KERNEL_VA, 1).overlay  # type: ignore[union-attr]
    cpu.isb()
    assert cpu.try_store(KERNEL_VA, 1) is None


def test_restricting_por_el1_without_isb_leaves_the_old_rights():
    """Closing pkey 1 again is not in effect until the next ISB either."""
    rig = protected_page(por_el1=0x57)
    cpu = rig.cpu
    cpu.write_por_el1(0x17)
    assert cpu.try_store(KERNEL_VA, 1) is None
    cpu.isb()
    assert cpu.try_store(KERNEL_VA, 1) is not None


def test_context_synchronisation_without_isb_applies_pending_writes():
    """Exception entry/return (context_sync) also applies a POR write, without counting an ISB."""
    rig = protected_page()
    cpu = rig.cpu
    isbs = cpu.isbs
    cpu.write_por_el1(0x57)
    cpu.context_sync()
    assert cpu.try_store(KERNEL_VA, 1) is None
    assert cpu.isbs == isbs


def test_por_in_effect_is_visible():
    """por_el1_in_effect shows the per-pkey rights the MMU currently applies."""
    rig = protected_page()
    cpu = rig.cpu
    cpu.write_por_el1(0x57)
    assert cpu.por_el1_in_effect[:2] == (7, 1)
    cpu.isb()
    assert cpu.por_el1_in_effect[:2] == (7, 5)


def test_por_el1_is_per_cpu():
    """Opening pkey 1 on CPU 0 leaves CPU 1 in the default context."""
    rig = protected_page()
    cpu0, cpu1 = rig.system.cpus
    cpu0.write_por_el1(0x57)
    cpu0.isb()
    assert cpu0.try_store(KERNEL_VA, 1) is None
    assert cpu1.try_store(KERNEL_VA, 1) is not None


def test_overlay_disabled_ignores_por():
    """With TCR2_EL1.POE clear, POR_EL1 = 0 restricts nothing."""
    rig = Rig()
    cpu = rig.cpu
    cpu.write_por_el1(0x0)
    cpu.isb()
    rig.map(KERNEL_VA, 3, poindex=1)
    assert cpu.try_store(KERNEL_VA, 1) is None
    cpu.set_tcr2(poe=True, e0poe=False)
    assert cpu.try_store(KERNEL_VA, 1) is None  # TCR2 write also waits for the ISB
    cpu.isb()
    assert cpu.try_store(KERNEL_VA, 1).overlay  # type: ignore[union-attr]


def test_cpu_without_poe_rejects_por_and_tcr2_writes():
    """On a CPU without FEAT_S1POE, MSR POR_ELx and TCR2_EL1.POE are UNDEFINED."""
    rig = Rig(poe=False)
    cpu = rig.cpu
    with pytest.raises(Undefined):
        cpu.write_por_el1(0x7)
    with pytest.raises(Undefined):
        cpu.write_por_el0(0x7)
    with pytest.raises(Undefined):
        cpu.set_tcr2(poe=True, e0poe=False)
    cpu.set_tcr2(poe=False, e0poe=False)


def test_counters_count_por_writes_isbs_loads_and_stores():
    """Every POR write, ISB, load and store shows in the counters, summed over CPUs."""
    rig = protected_page(por_el1=0x57)
    before = rig.system.hw_counters()
    cpu = rig.cpu
    cpu.write_por_el1(0x57)
    cpu.isb()
    cpu.store(KERNEL_VA, 1)
    cpu.load(KERNEL_VA)
    rig.system.cpus[1].load(KERNEL_VA)
    after = rig.system.hw_counters()
    delta = {k: after[k] - before.get(k, 0) for k in after}
    assert delta["por_write"] == 1 and delta["isb"] == 1
    assert delta["store"] == 1 and delta["load"] == 2
    assert delta["walk"] == 2  # one per CPU
