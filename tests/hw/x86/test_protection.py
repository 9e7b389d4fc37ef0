"""SDM 4.6 access rights on hw/x86, each protection with its negative control, and the
#PF error code bits of each fault."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.cpu import CR4_PKE, CR4_SMAP, CR4_SMEP
from kpsim.hw.x86.fault import PF_INSTR, PF_PK, PF_PROT, PF_USER, PF_WRITE, PageFault
from kpsim.hw.x86.pkeys import MSR_IA32_PKRS, set_key

from .rig import KERNEL_VA, USER_VA, Rig

PTP_KEY = 1  # the key the kpkeys pgtables context would give page tables


def fault_of(
    r: Rig, va: int, *, write: bool = False, fetch: bool = False, user: bool = False
) -> int:
    """The #PF error code of the access, or -1 if it succeeds."""
    try:
        if fetch:
            r.cpu.fetch(va, user=user)
        elif write:
            r.cpu.store(va, 0xAB, user=user)
        else:
            r.cpu.load(va, user=user)
    except AccessFault as exc:
        assert isinstance(exc.fault, PageFault)
        assert r.cpu.cr2 == va
        return int(exc.fault.error_code)
    return -1


def kernel_page(r: Rig, **kw: object) -> int:
    va = KERNEL_VA + 0x10_0000
    r.map(va, 0x30_0000, **kw)
    return va


@pytest.mark.parametrize("pks_on", [True, False])
def test_pks_write_disable(pks_on: bool) -> None:
    r = Rig()
    va = kernel_page(r, key=PTP_KEY)
    if pks_on:
        r.enable_pks()
    r.cpu.wrmsr(MSR_IA32_PKRS, set_key(0, PTP_KEY, wd=True))
    assert fault_of(r, va) == -1  # reads allowed under WD
    code = fault_of(r, va, write=True)
    if pks_on:
        assert code == PF_PROT | PF_WRITE | PF_PK
    else:
        assert code == -1  # control: CR4.PKS=0, the same PKRS value does nothing


def test_pks_write_disable_needs_cr0_wp() -> None:
    r = Rig()
    va = kernel_page(r, key=PTP_KEY)
    r.enable_pks()
    r.cpu.wrmsr(MSR_IA32_PKRS, set_key(0, PTP_KEY, wd=True))
    r.wp(False)
    assert fault_of(r, va, write=True) == -1  # WD binds supervisor writes only with WP=1
    r.wp(True)
    assert fault_of(r, va, write=True) == PF_PROT | PF_WRITE | PF_PK


@pytest.mark.parametrize("ad", [True, False])
def test_pks_access_disable(ad: bool) -> None:
    r = Rig()
    va = kernel_page(r, key=PTP_KEY)
    r.enable_pks()
    r.cpu.wrmsr(MSR_IA32_PKRS, set_key(0, PTP_KEY, ad=ad))
    want = PF_PROT | PF_PK if ad else -1
    assert fault_of(r, va) == want
    assert fault_of(r, va, write=True) == (want | PF_WRITE if ad else -1)
    assert fault_of(r, va, fetch=True) == -1  # keys never apply to instruction fetches


def test_pks_other_key_unaffected() -> None:
    r = Rig()
    va = kernel_page(r, key=0)
    r.enable_pks()
    r.cpu.wrmsr(MSR_IA32_PKRS, set_key(0, PTP_KEY, ad=True, wd=True))
    assert fault_of(r, va, write=True) == -1


def test_pkrs_change_takes_effect_without_tlb_flush() -> None:
    r = Rig()
    va = kernel_page(r, key=PTP_KEY)
    r.enable_pks()
    r.cpu.store(va, 1)  # fills the TLB (with D)
    walks = r.cpu.walks
    r.cpu.wrmsr(MSR_IA32_PKRS, set_key(0, PTP_KEY, wd=True))
    assert fault_of(r, va, write=True) == PF_PROT | PF_WRITE | PF_PK
    # the fault dropped the page's entry (SDM 4.10.4.1); refill, then open again
    assert fault_of(r, va) == -1
    walks = r.cpu.walks
    r.cpu.wrmsr(MSR_IA32_PKRS, 0)
    assert fault_of(r, va, write=True) == -1
    assert r.cpu.walks == walks  # served from the TLB: no flush, no walk


def test_pks_does_not_apply_to_user_pages_and_pku_does() -> None:
    r = Rig()
    va = USER_VA
    r.map(va, 0x40_0000, us=True, key=PTP_KEY)
    r.enable_pks()
    r.cpu.wrmsr(MSR_IA32_PKRS, set_key(0, PTP_KEY, ad=True))
    assert fault_of(r, va, user=True) == -1  # PKRS is for supervisor-mode addresses
    r.cpu.mov_cr4(r.cpu.cr4 | CR4_PKE)
    r.cpu.wrpkru(set_key(0, PTP_KEY, ad=True))
    assert fault_of(r, va, user=True) == PF_PROT | PF_USER | PF_PK
    assert fault_of(r, va) == PF_PROT | PF_PK  # PKRU binds supervisor accesses too
    r.cpu.wrpkru(set_key(0, PTP_KEY, wd=True))
    assert fault_of(r, va, user=True) == -1
    assert fault_of(r, va, write=True, user=True) == PF_PROT | PF_WRITE | PF_USER | PF_PK
    r.wp(False)
    assert fault_of(r, va, write=True) == -1  # supervisor write, WP=0: WD does not bind


@pytest.mark.parametrize("wp", [True, False])
def test_read_only_supervisor_write_honours_cr0_wp(wp: bool) -> None:
    r = Rig()
    va = kernel_page(r, rw=False)
    r.wp(wp)
    assert fault_of(r, va) == -1
    assert fault_of(r, va, write=True) == (PF_PROT | PF_WRITE if wp else -1)


def test_read_only_at_an_upper_level() -> None:
    r = Rig()
    va = kernel_page(r, rw=True)
    assert fault_of(r, va, write=True) == -1  # control
    pde = r.entry_pa(va, 2)
    r.set_entry(pde, r.mem.read64(pde) & ~e.RW)
    r.cpu.invlpg(va)
    assert fault_of(r, va, write=True) == PF_PROT | PF_WRITE


def test_user_write_to_read_only_ignores_wp() -> None:
    r = Rig()
    r.map(USER_VA, 0x40_0000, us=True, rw=False)
    r.wp(False)
    assert fault_of(r, USER_VA, user=True) == -1
    assert fault_of(r, USER_VA, write=True, user=True) == PF_PROT | PF_WRITE | PF_USER


@pytest.mark.parametrize("nx", [True, False])
def test_nx(nx: bool) -> None:
    r = Rig()
    va = kernel_page(r, nx=nx)
    assert fault_of(r, va, fetch=True) == (PF_PROT | PF_INSTR if nx else -1)
    assert fault_of(r, va) == -1  # data reads unaffected


def test_nx_at_an_upper_level() -> None:
    r = Rig()
    va = kernel_page(r)
    pml4e = r.entry_pa(va, 4)
    r.set_entry(pml4e, r.mem.read64(pml4e) | e.NX)
    assert fault_of(r, va, fetch=True) == PF_PROT | PF_INSTR


@pytest.mark.parametrize("us", [True, False])
def test_user_access_needs_us(us: bool) -> None:
    r = Rig()
    r.map(USER_VA, 0x40_0000, us=us)
    assert fault_of(r, USER_VA, user=True) == (-1 if us else PF_PROT | PF_USER)
    assert fault_of(r, USER_VA, write=True, user=True) == (
        -1 if us else PF_PROT | PF_WRITE | PF_USER
    )


def test_us_cleared_at_an_upper_level() -> None:
    r = Rig()
    r.map(USER_VA, 0x40_0000, us=True)
    pdpte = r.entry_pa(USER_VA, 3)
    r.set_entry(pdpte, r.mem.read64(pdpte) & ~e.US)
    assert fault_of(r, USER_VA, user=True) == PF_PROT | PF_USER


def test_not_present_user_fetch_error_code() -> None:
    r = Rig()
    assert fault_of(r, USER_VA, fetch=True, user=True) == PF_USER | PF_INSTR


@pytest.mark.parametrize("on", [True, False])
def test_smep_smap(on: bool) -> None:
    r = Rig()
    r.map(USER_VA, 0x40_0000, us=True)
    if on:
        r.cpu.mov_cr4(r.cpu.cr4 | CR4_SMEP | CR4_SMAP)
    assert fault_of(r, USER_VA, fetch=True) == (PF_PROT | PF_INSTR if on else -1)
    assert fault_of(r, USER_VA) == (PF_PROT if on else -1)
    r.cpu.ac = True  # STAC
    assert fault_of(r, USER_VA) == -1


@pytest.mark.parametrize("wp", [True, False])
def test_pku_write_disable_for_user_writes_ignores_cr0_wp(wp: bool) -> None:
    """PKRU WD stops a user-mode write whatever CR0.WP; a supervisor write to the same
    user page is stopped only with CR0.WP=1 (SDM 4.6.2); control: WD off, both succeed."""
    r = Rig()
    va = USER_VA + 0x2000
    r.map(va, 0x40_0000, us=True, key=PTP_KEY)
    r.cpu.mov_cr4(r.cpu.cr4 | CR4_PKE)
    r.wp(wp)
    r.cpu.ac = True  # SMAP override (SMAP is off in the rig anyway)
    r.cpu.wrpkru(set_key(0, PTP_KEY, wd=True))
    assert fault_of(r, va, write=True, user=True) == PF_PROT | PF_WRITE | PF_USER | PF_PK
    sup = fault_of(r, va, write=True)
    assert sup == (PF_PROT | PF_WRITE | PF_PK if wp else -1)
    r.cpu.wrpkru(0)  # control: the same writes with WD clear
    assert fault_of(r, va, write=True, user=True) == -1
    assert fault_of(r, va, write=True) == -1
