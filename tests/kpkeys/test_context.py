"""The kpkeys framework (context.py) and the arm64 register hooks: contexts, guards,
exception entry/return and context switches, observed through POR_EL1."""

import pytest

from kpsim.kpkeys.context import (
    kpkeys_enabled,
    kpkeys_guard,
    kpkeys_restore_pkey_reg,
    kpkeys_set_context,
)
from kpsim.machine import boot
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_DEFAULT, KPKEYS_CTX_PGTABLES
from kpsim.mm.sched import Task

DEFAULT, PGTABLES = 0x17, 0x57


@pytest.fixture(scope="module")
def m():
    return boot(memory="256M")


def test_boot_value_on_every_cpu():
    on = boot(memory="256M", cpus=3)
    assert [c.por_el1 for c in on.hw.cpus] == [DEFAULT] * 3
    off = boot(memory="256M", hardened_pgtables=False)
    assert [c.por_el1 for c in off.hw.cpus] == [0x7, 0x7]  # POR_EL1_INIT without the config


def test_set_context_returns_the_previous_value_and_restore_writes_it_back():
    """v7 (set/restore): every call writes and synchronises, even to the same value."""
    m = boot(memory="256M", series="v7")
    cpu = m.hw.cpus[0]
    w0, i0 = cpu.por_writes, cpu.isbs
    prev = kpkeys_set_context(m.arch, KPKEYS_CTX_PGTABLES)
    assert prev == DEFAULT and cpu.por_el1 == PGTABLES
    assert kpkeys_set_context(m.arch, KPKEYS_CTX_PGTABLES) == PGTABLES  # v7: always writes
    kpkeys_restore_pkey_reg(m.arch, prev)
    assert cpu.por_el1 == DEFAULT
    assert (cpu.por_writes - w0, cpu.isbs - i0) == (3, 3)  # each write has its ISB
    kpkeys_restore_pkey_reg(m.arch, 0)  # KPKEYS_PKEY_REG_INVAL: nothing to restore
    assert cpu.por_writes - w0 == 3 and cpu.por_el1 == DEFAULT


def test_enter_context_to_the_current_value_writes_nothing(m):
    """enter-leave (the default): entering the context POR_EL1 already holds returns
    KPKEYS_PKEY_REG_INVAL and writes nothing; restoring that is a no-op."""
    cpu = m.hw.cpus[0]
    w0, i0 = cpu.por_writes, cpu.isbs
    prev = kpkeys_set_context(m.arch, KPKEYS_CTX_PGTABLES)
    assert prev == DEFAULT and cpu.por_el1 == PGTABLES
    assert kpkeys_set_context(m.arch, KPKEYS_CTX_PGTABLES) == 0
    kpkeys_restore_pkey_reg(m.arch, 0)
    assert cpu.por_el1 == PGTABLES
    kpkeys_restore_pkey_reg(m.arch, prev)
    assert cpu.por_el1 == DEFAULT
    assert (cpu.por_writes - w0, cpu.isbs - i0) == (2, 2)


def test_bad_context_is_refused(m):
    with pytest.raises(ValueError):
        kpkeys_set_context(m.arch, 2)
    assert m.hw.cpus[0].por_el1 == DEFAULT


def test_guard_restores_even_when_an_exception_escapes(m):
    cpu = m.hw.cpus[0]
    with pytest.raises(RuntimeError), kpkeys_guard(m.arch, KPKEYS_CTX_PGTABLES) as saved:
        assert saved == DEFAULT and cpu.por_el1 == PGTABLES
        with kpkeys_guard(m.arch, KPKEYS_CTX_DEFAULT):  # nested: back to default inside
            assert cpu.por_el1 == DEFAULT
        assert cpu.por_el1 == PGTABLES
        raise RuntimeError("escapes")
    assert cpu.por_el1 == DEFAULT


def test_without_poe_everything_is_a_no_op():
    m = boot(memory="256M", poe=False)
    cpu = m.hw.cpus[0]
    assert not kpkeys_enabled(m.arch)
    with kpkeys_guard(m.arch, KPKEYS_CTX_PGTABLES) as saved:
        assert saved == 0
    assert cpu.por_writes == 0 and not m.arch.hardened_pgtables


def test_context_switch_saves_and_restores_per_thread(m):
    """A task switched out inside the page-table context gets it back; the task
    switched in runs with its own value; equal values cost no register write."""
    cpu = m.hw.cpus[1]
    a = Task(9001, "a", None, m.arch.copy_thread(m.arch.percpu[1].current))
    b = Task(9002, "b", None, m.arch.copy_thread(m.arch.percpu[1].current))
    m.arch.switch_to(1, a)
    with m.arch.on_cpu(1):
        saved = kpkeys_set_context(m.arch, KPKEYS_CTX_PGTABLES)
    w0 = cpu.por_writes
    m.arch.switch_to(1, b)
    assert cpu.por_el1 == DEFAULT and a.thread.por_el1 == PGTABLES
    m.arch.switch_to(1, a)
    assert cpu.por_el1 == PGTABLES
    assert cpu.por_writes - w0 == 2
    with m.arch.on_cpu(1):
        kpkeys_restore_pkey_reg(m.arch, saved)
    w1 = cpu.por_writes
    m.arch.switch_to(1, b)  # same value on both sides: no write
    assert cpu.por_writes == w1 and cpu.por_el1 == DEFAULT


def test_exception_entry_resets_only_if_different(m):
    cpu = m.hw.cpus[0]
    w0 = cpu.por_writes
    seen = []
    m.arch.interrupt(0, lambda: seen.append(cpu.por_el1))
    assert seen == [DEFAULT] and cpu.por_writes == w0  # already default: no write
    with kpkeys_guard(m.arch, KPKEYS_CTX_PGTABLES):
        w1 = cpu.por_writes
        m.arch.interrupt(0, lambda: seen.append(cpu.por_el1))
        assert seen[-1] == DEFAULT and cpu.por_el1 == PGTABLES
        assert cpu.por_writes - w1 == 2  # reset on entry, restore on return
