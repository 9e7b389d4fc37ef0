"""The kernel image's own mappings: where swapper_pg_dir and the static tables live, and
when the image alias and the linear alias of text/rodata become read-only.

Models checked: ``vmlinux.lds.S`` (swapper_pg_dir at the end of RO_DATA, init_pg_dir
after bss), ``map_mem`` (the text+rodata alias mapped apart, NO_CONT_MAPPINGS),
``mark_linear_text_alias_ro``, ``mark_rodata_ro`` and ``set_swapper_pgd``.
"""

from __future__ import annotations

import pytest

from kpsim.arch.arm64.arch import Arm64
from kpsim.arch.arm64.memory import KIMAGE_VADDR
from kpsim.arch.arm64.setup import (
    DATA_OFFSET,
    INIT_BEGIN_OFFSET,
    KIMAGE_SIZE,
    RODATA_OFFSET,
    SWAPPER_OFFSET,
)
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import Translation, walk
from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig

MEM = 256 << 20


def _boot(policy: str = "pte", *, hardened: bool = False, rodata_ro: bool = False) -> Machine:
    cfg = MachineConfig(memory=MEM, linear_map=policy, hardened_pgtables=hardened)
    return Machine.boot(cfg, rodata_ro=rodata_ro)


def _walk(m: Machine, va: int) -> Translation:
    t = walk(m.mem, m.arch.swapper_pg_dir, va)
    assert isinstance(t, Translation), t
    return t


def _rewrite(m: Machine, va: int) -> Fault | None:
    """Store back the value already there (an attacker's write that changes nothing)."""
    cpu = m.hw.cpus[0]
    return cpu.try_store(va, m.mem.read64(_walk(m, va).pa))


def _base_permission_fault(f: Fault | None) -> bool:
    return f is not None and f.kind is FaultKind.PERMISSION and f.write and not f.overlay


def test_swapper_pg_dir_ends_rodata_and_static_tables_follow_bss() -> None:
    """swapper_pg_dir is the last page before __init_begin; init_pg_dir ends the image."""
    m = _boot()
    base = m.arch.kimage_pa
    assert m.arch.swapper_pg_dir == base + SWAPPER_OFFSET
    assert base + RODATA_OFFSET <= m.arch.swapper_pg_dir < base + INIT_BEGIN_OFFSET
    assert m.arch.static_tables
    for pa in m.arch.static_tables:
        assert base + DATA_OFFSET <= pa < base + KIMAGE_SIZE
    assert max(m.arch.static_tables) == base + KIMAGE_SIZE - 4096


def test_image_rodata_is_writable_until_mark_rodata_ro() -> None:
    """map_kernel maps rodata PAGE_KERNEL; mark_rodata_ro makes it PAGE_KERNEL_RO and
    flushes the writable translation the earlier store cached."""
    m = _boot()
    rodata = KIMAGE_VADDR + RODATA_OFFSET
    swapper_image = KIMAGE_VADDR + SWAPPER_OFFSET
    assert _rewrite(m, rodata) is None  # negative control: writable before
    assert _rewrite(m, swapper_image) is None
    m.mark_rodata_ro()
    assert _base_permission_fault(_rewrite(m, rodata))
    assert _base_permission_fault(_rewrite(m, swapper_image))
    assert _rewrite(m, KIMAGE_VADDR + DATA_OFFSET) is None  # data stays writable
    assert _base_permission_fault(_rewrite(m, KIMAGE_VADDR))  # text was never writable
    t = _walk(m, rodata)
    assert t.level == 3 and not t.desc & d.CONT  # rodata: pages, no contiguous hint


@pytest.mark.parametrize("policy", ["pte", "block"])
def test_linear_alias_of_text_and_rodata_is_read_only_after_boot(policy: str) -> None:
    """mark_linear_text_alias_ro (smp_cpus_done) runs in every boot, before KUnit: the
    alias of swapper_pg_dir faults on its base permission; data after __init_begin
    stays writable."""
    m = _boot(policy)
    swapper_lm = m.arch.phys_to_virt(m.arch.swapper_pg_dir)
    assert _base_permission_fault(_rewrite(m, swapper_lm))
    assert _base_permission_fault(_rewrite(m, m.arch.phys_to_virt(m.arch.kimage_pa)))
    data_lm = m.arch.phys_to_virt(m.arch.kimage_pa + INIT_BEGIN_OFFSET)
    assert _rewrite(m, data_lm) is None


def test_without_mark_linear_text_alias_ro_the_alias_stays_writable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Negative control: skip mark_linear_text_alias_ro and the same store lands."""
    monkeypatch.setattr(Arm64, "mark_linear_text_alias_ro", lambda self: None)
    m = _boot()
    assert _rewrite(m, m.arch.phys_to_virt(m.arch.swapper_pg_dir)) is None


@pytest.mark.parametrize("policy", ["pte", "block"])
def test_image_alias_is_block_mapped_without_contiguous_hint(policy: str) -> None:
    """map_mem: [_stext, __init_begin) as 2M blocks, never PTE_CONT, on either policy;
    the rest follows the policy (pages with pte)."""
    m = _boot(policy)
    for off in range(0, INIT_BEGIN_OFFSET, 2 << 20):
        t = _walk(m, m.arch.phys_to_virt(m.arch.kimage_pa + off))
        assert t.level == 2
        assert not t.desc & d.CONT
        assert not t.perm_el1 & d.Perm.W
    after = _walk(m, m.arch.phys_to_virt(m.arch.kimage_pa + INIT_BEGIN_OFFSET))
    assert after.level == (3 if policy == "pte" else 2)
    assert after.perm_el1 & d.Perm.W


def test_set_swapper_pgd_uses_the_image_alias_then_the_fixmap() -> None:
    """While rodata is RW, set_swapper_pgd stores through the image alias (the CPU caches
    that translation); after mark_rodata_ro it goes through the fixmap (no fault)."""
    m = _boot()
    entry_pa = m.arch.swapper_pg_dir + 8  # PGD index 1: linear map past 512 GiB, empty
    assert m.mem.read64(entry_pa) == 0
    cpu = m.hw.cpus[0]
    image_va = KIMAGE_VADDR + SWAPPER_OFFSET + 8
    cpu.tlb.invalidate_all()
    m.arch.set_swapper_pgd(entry_pa, 0)
    assert cpu.tlb.get(image_va >> 12) is not None
    m.mark_rodata_ro()
    cpu.tlb.invalidate_all()
    m.arch.set_swapper_pgd(entry_pa, 0)
    assert cpu.tlb.get(image_va >> 12) is None
    assert m.counters["set_swapper_pgd"] == 2


def test_static_tables_are_keyed_only_through_their_linear_alias() -> None:
    """arch_kpkeys_protect_static_pgtables keys init_pg_dir through the linear map
    (set_memory_pkey works on linear addresses only). The image's own RW data mapping
    reaches the same pages with pkey 0: a write there lands, in Linux as here
    (docs/fidelity.md); through the linear alias the overlay stops it."""
    m = _boot(hardened=True, rodata_ro=True)
    for pa in m.arch.static_tables:
        lm = _walk(m, m.arch.phys_to_virt(pa))
        image = _walk(m, m.arch.kimage_va(pa))
        assert (lm.po_index, image.po_index) == (1, 0)
    pa = m.arch.static_tables[0]
    f = _rewrite(m, m.arch.phys_to_virt(pa))
    assert f is not None and f.overlay
    assert _rewrite(m, m.arch.kimage_va(pa)) is None
