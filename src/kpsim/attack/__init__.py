"""Attack campaigns: a data-only arbitrary-write attacker against kpkeys-protected page
tables (issue 8, item 3; the threat model of spec §1).

API for ``kpsim attack`` and the ``[attack]`` table of scenarios::

    config = validate_attack(scenario.attack)      # AttackSpec -> AttackConfig (exit 2 if bad)
    report = run_attack(machine, config)          # AttackReport
    report.as_json(); report.exit_status          # 1: an in-threat-model write landed, feature on
"""

from kpsim.attack.campaign import AttackReport, ClassResult, run_attack
from kpsim.attack.config import TARGETS, TIMINGS, AttackConfig, validate_attack

__all__ = [
    "TARGETS",
    "TIMINGS",
    "AttackConfig",
    "AttackReport",
    "ClassResult",
    "run_attack",
    "validate_attack",
]
