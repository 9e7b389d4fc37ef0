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


@for_each_arch("attack")
def test_negative_control_every_write_lands_with_the_feature_off(arch):
    """Feature off: the same writes all land and each gains the attacker."""
    _, report = _campaign(arch, hardened_pgtables=False)
    assert not report.feature_on
    for cls in ENTRY_CLASSES:
        r = _rows(report)[cls]
        assert r.landed == r.attempts == 2 * len(INSIDE) and r.blocked == 0, cls
        assert sum(r.gains.values()) == r.attempts, cls
