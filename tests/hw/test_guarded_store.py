"""Cpu.store_with_por_el1 (the guarded page-table store) is exactly MSR POR_EL1 + ISB,
the store, MSR POR_EL1 (previous value) + ISB: same rights, registers and counters."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.arm64.cpu import Cpu

from .rig import KERNEL_VA, Rig


def _rig() -> Rig:
    rig = Rig()
    rig.poe_on(por_el1=0x17)  # pkey 1 read-only at rest
    rig.map(KERNEL_VA, 3, poindex=1)
    return rig


def _reference(cpu: Cpu, va: int, value: int, por: int) -> None:
    prev = cpu.por_el1
    cpu.write_por_el1(por)
    cpu.isb()
    try:
        cpu.store(va, value)
    finally:
        cpu.write_por_el1(prev)
        cpu.isb()


def _state(cpu: Cpu) -> tuple[object, ...]:
    keys = sorted(k for k, _ in cpu.tlb.items())
    return (cpu.counters(), cpu.por_el1, cpu.por_el1_in_effect, keys, cpu.load(KERNEL_VA))


@pytest.mark.parametrize("primed", [False, True])  # TLB miss, or hit
@pytest.mark.parametrize("por", [0x57, 0x17])  # pkey 1 RW (the guard), R (no guard: faults)
def test_store_with_por_el1_matches_the_instruction_sequence(por: int, primed: bool) -> None:
    """Same outcome (store or overlay fault), registers and counters as the sequence."""
    outcomes = []
    for fused in (False, True):
        rig = _rig()
        cpu = rig.cpu
        if primed:
            cpu.load(KERNEL_VA)
        try:
            if fused:
                cpu.store_with_por_el1(KERNEL_VA + 8, 0xAB, por)
            else:
                _reference(cpu, KERNEL_VA + 8, 0xAB, por)
            err = None
        except AccessFault as exc:
            err = (exc.fault.overlay, exc.fault.kind)
        outcomes.append((err, _state(cpu), cpu.load(KERNEL_VA + 8)))
    assert outcomes[0] == outcomes[1]
    assert (outcomes[1][0] is None) == (por == 0x57)  # negative control: R faults


def test_store_with_por_el1_restores_the_previous_value() -> None:
    """After the store the previous POR_EL1 governs again (a later write faults)."""
    rig = _rig()
    cpu = rig.cpu
    cpu.store_with_por_el1(KERNEL_VA, 1, 0x57)
    assert cpu.por_el1 == 0x17
    with pytest.raises(AccessFault):
        cpu.store(KERNEL_VA, 2)
