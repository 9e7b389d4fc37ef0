"""The full permission matrix: base permissions (AP, PXN, UXN) intersected with the
overlay (POR_ELx[POIndex]) for read, write and execute at EL0 and EL1, with the
overlay enabled and disabled, and the exact fault each denial reports."""

from __future__ import annotations

import itertools

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import EC, FaultKind
from kpsim.hw.arm64.fault import Fault

from .rig import KERNEL_VA, USER_VA, Rig

PKEY = 3
OVERLAY_FIELDS = [*range(8), 0x8, 0xF]  # the 8 encodings, plus values with bit 3 set


def oracle_base(ap: int, pxn: bool, uxn: bool, el: int) -> dict[str, bool]:
    """AArch64.S1DirectBasePermissions for a leaf, written out independently of kpsim."""
    pr, pw, ur, uw = {
        0b00: (1, 1, 0, 0),
        0b01: (1, 1, 1, 1),
        0b10: (1, 0, 0, 0),
        0b11: (1, 0, 1, 0),
    }[ap]
    px = not (pxn or uw)
    ux = not uxn
    if el == 1:
        return {"r": bool(pr), "w": bool(pw), "x": px}
    return {"r": bool(ur), "w": bool(uw), "x": ux}


def oracle_overlay(field: int) -> dict[str, bool]:
    """POR_ELx field: R=bit 0, X=bit 1, W=bit 2; any value with bit 3 set grants nothing."""
    if field & 0x8:
        return {"r": False, "w": False, "x": False}
    return {"r": bool(field & 1), "w": bool(field & 4), "x": bool(field & 2)}


def oracle_esr(el: int, access: str, overlay: bool, level: int = 3) -> int:
    """The ESR_EL1 value Arm ARM D24 specifies for a permission fault."""
    ec = (0x21 if el == 1 else 0x20) if access == "x" else (0x25 if el == 1 else 0x24)
    esr = ec << 26 | 1 << 25 | (0x0C + level)
    if access == "w":
        esr |= 1 << 6
    if overlay:
        esr |= 1 << 38
    return esr


def attempt(rig: Rig, va: int, access: str, el: int) -> Fault | None:
    cpu = rig.cpu
    try:
        if access == "r":
            cpu.load(va, el=el)
        elif access == "w":
            cpu.store(va, 0x1234, el=el)
        else:
            cpu.fetch(va, el=el)
    except AccessFault as exc:
        return exc.fault  # type: ignore[no-any-return]
    return None


@pytest.mark.parametrize("overlay_on", [True, False], ids=["poe-on", "poe-off"])
@pytest.mark.parametrize("el", [1, 0], ids=["EL1", "EL0"])
@pytest.mark.parametrize("field", OVERLAY_FIELDS, ids=[f"por{f:#x}" for f in OVERLAY_FIELDS])
def test_permission_matrix(field, el, overlay_on):
    """Every AP x PXN x UXN x r/w/x combination is allowed iff base ∩ overlay allows it,
    and every denial is a permission fault with the ESR the architecture reports."""
    rig = Rig()
    cpu = rig.cpu
    por = 0x7777_7777 & ~(0xF << 4 * PKEY) | field << 4 * PKEY  # other pkeys RWX
    cpu.write_por_el1(por)
    cpu.write_por_el0(por)
    cpu.set_tcr2(poe=overlay_on, e0poe=overlay_on)
    cpu.isb()
    va = USER_VA + 0x5008
    pa = rig.map(va & ~0xFFF, 3, poindex=PKEY)
    slot = rig.slot(va, 3)
    mismatches = []
    for ap, pxn, uxn, access in itertools.product(range(4), (False, True), (False, True), "rwx"):
        rig.mem.write64(slot, d.leaf_desc(pa, 3, pxn=pxn, uxn=uxn, poindex=PKEY) | ap << 6)
        cpu.tlbi_all()
        base = oracle_base(ap, pxn, uxn, el)[access]
        over = oracle_overlay(field)[access] if overlay_on else True
        if base and over:
            want = None
        else:
            want = Fault(
                va,
                FaultKind.PERMISSION,
                3,
                write=access == "w",
                exec=access == "x",
                el=el,
                overlay=base,
            )
        got = attempt(rig, va, access, el)
        if got != want or (got is not None and got.esr != oracle_esr(el, access, base)):
            mismatches.append((f"AP={ap:02b} PXN={pxn:d} UXN={uxn:d} {access}", want, got))
    assert not mismatches, "\n".join(map(str, mismatches))


@pytest.mark.parametrize(
    ("el", "access", "ec"),
    [
        (1, "r", EC.DABT_CUR),
        (1, "w", EC.DABT_CUR),
        (1, "x", EC.IABT_CUR),
        (0, "r", EC.DABT_LOW),
        (0, "w", EC.DABT_LOW),
        (0, "x", EC.IABT_LOW),
    ],
)
def test_exception_class_by_access_and_el(el, access, ec):
    """Data aborts are EC 0x25/0x24 and instruction aborts 0x21/0x20 (current/lower EL)."""
    rig = Rig()
    rig.poe_on(por_el1=0x0, por_el0=0x0)  # pkey 0: no access at all
    # AP=11, PXN=0, UXN=0: r-x at both ELs, so only the overlay denies.
    rig.map(USER_VA, 3, user=True, rdonly=True, pxn=False, uxn=False)
    f = attempt(rig, USER_VA, access, el)
    assert f is not None
    assert f.ec is ec
    assert (f.esr >> 26) & 0x3F == int(ec)


def test_overlay_write_fault_is_the_esr_from_the_series():
    """A write to a pkey-1 page under POR_EL1 0x17 reports ESR 0x000000409600004f."""
    rig = Rig()
    rig.poe_on(por_el1=0x17)
    rig.map(KERNEL_VA, 3, poindex=1)
    f = rig.cpu.try_store(KERNEL_VA + 0x10, 1)
    assert f is not None and f.esr == 0x0000_0040_9600_004F
    assert f.far == KERNEL_VA + 0x10
    assert "overlay" in str(f)


def test_overlay_allows_write_in_the_pgtables_context():
    """Negative control: the same write succeeds under POR_EL1 0x57 (pkey 1 RW)."""
    rig = Rig()
    rig.poe_on(por_el1=0x57)
    rig.map(KERNEL_VA, 3, poindex=1)
    assert rig.cpu.try_store(KERNEL_VA + 0x10, 1) is None
    assert rig.cpu.load(KERNEL_VA + 0x10) == 1


def test_base_denial_is_not_reported_as_an_overlay_fault():
    """A write the base permissions deny faults with ISS2.Overlay clear, even if POR denies too."""
    rig = Rig()
    rig.poe_on(por_el1=0x17)
    rig.map(KERNEL_VA, 3, poindex=1, rdonly=True)
    f = rig.cpu.try_store(KERNEL_VA, 1)
    assert f is not None and not f.overlay
    assert f.esr == 0x9600_004F


@pytest.mark.parametrize(("level", "fsc"), [(1, 0x0D), (2, 0x0E), (3, 0x0F)])
def test_permission_fault_reports_the_level_of_the_leaf(level, fsc):
    """Overlay faults on 1G/2M blocks and 4K pages carry the leaf's level in the FSC."""
    rig = Rig()
    rig.poe_on(por_el1=0x17)
    rig.map(KERNEL_VA, level, poindex=1)
    f = rig.cpu.try_store(KERNEL_VA + 0x808, 1)
    assert f is not None
    assert (f.kind, f.level, f.overlay) == (FaultKind.PERMISSION, level, True)
    assert f.esr == 0x40_9600_0040 | fsc


def test_el0_uses_por_el0_and_el1_uses_por_el1():
    """POR_EL0 governs EL0 accesses and POR_EL1 EL1 accesses, independently."""
    rig = Rig()
    rig.poe_on(por_el1=0x7, por_el0=0x1)  # pkey 0: EL1 RWX, EL0 R
    rig.map(USER_VA, 3, user=True)
    assert rig.cpu.try_store(USER_VA, 1, el=1) is None
    f = rig.cpu.try_store(USER_VA, 1, el=0)
    assert f is not None and f.overlay and f.el == 0
    assert rig.cpu.load(USER_VA, el=0) == 1


@pytest.mark.parametrize(
    ("table_bits", "el", "access", "allowed"),
    [
        (d.AP_TABLE_RDONLY, 1, "w", False),
        (d.AP_TABLE_RDONLY, 0, "w", False),
        (d.AP_TABLE_RDONLY, 1, "r", True),
        (d.AP_TABLE_NO_EL0, 0, "r", False),
        (d.AP_TABLE_NO_EL0, 0, "w", False),
        (d.AP_TABLE_NO_EL0, 0, "x", True),  # APTable limits data access only
        (d.AP_TABLE_NO_EL0, 1, "w", True),
        (d.PXN_TABLE, 1, "x", False),
        (d.PXN_TABLE, 0, "x", True),
        (d.UXN_TABLE, 0, "x", False),
        (d.UXN_TABLE, 1, "x", True),
        (0, 0, "x", True),
    ],
)
def test_hierarchical_table_permissions(table_bits, el, access, allowed):
    """APTable, PXNTable and UXNTable in table descriptors restrict every leaf below them."""
    rig = Rig()
    va = USER_VA
    pa = rig.alloc_data()
    slot = rig.slot(va, 3, table_bits=table_bits)
    # AP=01 (EL0 RW), PXN clear except where EL0-writable forbids EL1 execute anyway:
    # use AP=11 (read-only at both ELs) for execute checks so EL1 could execute.
    ap = 0b11 if access == "x" else 0b01
    rig.mem.write64(slot, d.leaf_desc(pa, 3, pxn=False, uxn=False) | ap << 6)
    assert (attempt(rig, va, access, el) is None) is allowed
