"""Attack campaigns on every architecture: every in-threat-model page-table write is
blocked with the feature on, from either CPU at each moment; the same writes all land
with it off (the negative control)."""

from __future__ import annotations

from kpsim.attack import AttackConfig, run_attack
from kpsim.attack.config import OUTSIDE_THREAT_MODEL, TARGETS, TIMINGS
from kpsim.audit.invariants import audit

from .rig import for_each_arch, machine

ENTRY_CLASSES = tuple(t for t in TARGETS if t not in ("random", "kimage_alias"))
INSIDE = tuple(t for t in TIMINGS if t not in OUTSIDE_THREAT_MODEL)


def _campaign(arch, **kw):
    m = machine(arch, cpus=2, **kw)
    targets = (*ENTRY_CLASSES, "random")
    return m, run_attack(m, AttackConfig(targets=targets, attempts=2, random_attempts=8))


def _rows(report):
    return {r.cls: r for r in report.targets}


@for_each_arch("attack")
def test_every_in_threat_model_write_is_blocked(arch):
    """Feature on: no write lands, none gains the attacker, exit status 0."""
    m, report = _campaign(arch)
    assert report.feature_on and report.exit_status == 0
    rows = _rows(report)
    for cls in ENTRY_CLASSES:
        r = rows[cls]
        assert r.landed == 0 and r.blocked == r.attempts == 2 * len(INSIDE), cls
        assert not r.gains, cls
    assert rows["random"].landed == 0
    assert audit(m) == []


def _gain(cls):
    return "kernel_page_reachable_from_user" if cls == "user_pte" else "writable_readonly_page"


@for_each_arch("attack")
def test_negative_control_every_write_lands_with_the_feature_off(arch):
    """Feature off: the same writes all land and each gains the attacker (a kernel page
    reachable from user space, or a text/rodata page made writable); exit 0."""
    _, report = _campaign(arch, hardened_pgtables=False)
    assert not report.feature_on and report.exit_status == 0
    for cls in ENTRY_CLASSES:
        r = _rows(report)[cls]
        assert r.landed == r.attempts == 2 * len(INSIDE) and r.blocked == 0, cls
        assert r.gains == {_gain(cls): r.attempts}, cls


def _blocked_fault_is_the_pkey_fault(arch, row):
    """arm64: an ESR of a write data abort, permission, ISS2.Overlay; x86: a #PF error code
    with P, W/R and PK set, U/S clear (a supervisor write stopped by a key)."""
    if arch == "arm64":
        from kpsim.hw.arm64.esr import decode_esr

        esr = decode_esr(int(row.blocked_esr, 16))
        return esr["ec"] == "0x25" and esr["access"] == "write" and esr["overlay"] is True
    from kpsim.hw.x86.fault import decode_pf

    pf = decode_pf(int(row.blocked_fault["blocked_pf_error_code"], 16))
    return pf["p"] and pf["w_r"] and pf["pk"] and not pf["u_s"] and not pf["rsvd"]


@for_each_arch("attack")
def test_blocked_write_is_the_pkey_hardware_fault(arch):
    """Each class's kept fault is the one the pkey hardware raises, in its own words
    (arm64 ``blocked_esr``, x86 ``blocked_pf_error_code``); the other arch's key is absent."""
    _, report = _campaign(arch)
    other = "blocked_pf_error_code" if arch == "arm64" else "blocked_esr"
    for r in report.targets:
        if r.cls != "random":
            assert _blocked_fault_is_the_pkey_fault(arch, r), r.cls
            assert other not in r.as_json()


@for_each_arch("attack")
def test_negative_control_no_pkey_hardware(arch):
    """No pkey hardware (arm64 FEAT_S1POE, x86 PKS): the feature is off, every write
    lands and gains the attacker, and the note names the missing hardware."""
    _, report = _campaign(arch, pkeys=False)
    assert not report.feature_on and report.exit_status == 0
    for cls in ENTRY_CLASSES:
        r = _rows(report)[cls]
        assert r.landed == r.attempts == 2 * len(INSIDE) and r.blocked == 0, cls
        assert r.gains == {_gain(cls): r.attempts}, cls
    hw = "POE" if arch == "arm64" else "PKS"
    assert any(f"no {hw}" in n for n in report.notes)


@for_each_arch("attack")
def test_other_cpu_window_is_really_open(arch):
    """The other CPU's guard and batched section grant pkey-1 write there (and an
    interrupt is taken inside the attacker's own guard), yet the attacker's write faults."""
    _, report = _campaign(arch)
    for r in report.targets:
        if r.cls == "random":
            continue
        for timing in ("other_guard", "other_lazy_mmu", "own_irq"):
            row = r.by_timing[timing]
            assert row["window_open"] == 2 and row["blocked"] == 2, (r.cls, timing)
            assert row["attacker_pkey1_writable"] == 0, (r.cls, timing)
        assert r.by_timing["other_busy"]["attempts"] == 2, r.cls


@for_each_arch("attack")
def test_outside_threat_model_reported_apart(arch):
    """Writes from the attacker's own open guard or section land, reported apart, exit 0."""
    _, report = _campaign(arch)
    assert report.exit_status == 0
    outside = {r.cls: r for r in report.outside}
    for cls in ENTRY_CLASSES:
        r = outside[cls]
        assert set(r.by_timing) == OUTSIDE_THREAT_MODEL
        assert r.landed == r.attempts == 4 and r.blocked == 0
        assert all(row["attacker_pkey1_writable"] == 2 for row in r.by_timing.values())


@for_each_arch("attack")
def test_unsafe_split_tables_are_hit(arch):
    """The minimal allocator on a block-mapped linear (direct) map leaves the split's
    tables unkeyed: linear_pte writes to them land, exit 1, with a note; the other
    entry classes stay blocked."""
    m = machine(arch, cpus=2, linear_map="block", allocator="minimal", allow_unsafe_split=True)
    report = run_attack(m, AttackConfig(targets=ENTRY_CLASSES, attempts=2))
    rows = _rows(report)
    pte = rows["linear_pte"]
    assert pte.extra["tables_left_unprotected_by_split"] > 0
    assert pte.landed == pte.attempts and report.exit_status == 1
    assert all(not e["table_keyed"] for e in pte.examples)
    assert any("unprotected by a recursive" in n for n in report.notes)
    for cls in ("user_pte", "vmalloc_pte", "kimage_pud"):
        assert rows[cls].landed == 0 and rows[cls].blocked == rows[cls].attempts, cls


@for_each_arch("attack")
def test_one_cpu_skips_other_cpu_timings(arch):
    """With one CPU the other-CPU timings are skipped with a reason, not faked."""
    m = machine(arch, cpus=1)
    report = run_attack(m, AttackConfig(targets=("user_pte", "random"), attempts=1))
    skipped = {(s["class"], s["timing"]) for s in report.skipped}
    assert ("user_pte", "other_guard") in skipped and ("random", "other_busy") in skipped
    assert set(_rows(report)["user_pte"].by_timing) == {"rest", "own_irq"}


@for_each_arch("attack")
def test_same_seed_same_report(arch):
    """The campaign is deterministic for a seed, and the seed changes it."""
    a = _campaign(arch)[1].as_json()
    b = _campaign(arch)[1].as_json()
    m = machine(arch, cpus=2)
    targets = (*ENTRY_CLASSES, "random")
    c = run_attack(m, AttackConfig(targets=targets, attempts=2, random_attempts=8, seed=9))
    c = c.as_json()
    assert a == b and a != c
