"""Schedule exploration on every architecture: with every protective step on, no
schedule of injected interrupts, exceptions and switches inside the guarded paths
breaks the invariants; with one step off, a short violating schedule is found."""

from __future__ import annotations

from kpsim.engine.explore import ExploreConfig, explore

from .rig import config, for_each_arch

BUDGET = 300


def _cfg(arch, disabled=()):
    return ExploreConfig(config(arch, series="enter-leave"), "guarded-paths", frozenset(disabled))


@for_each_arch("explore")
def test_default_configuration_finds_nothing(arch):
    """Every step on: no violation over the budget."""
    s = explore(_cfg(arch), BUDGET)
    assert s.first is None and s.violating == 0 and s.explored == BUDGET


@for_each_arch("explore")
def test_negative_control_a_disabled_step_yields_a_violation(arch):
    """The pkey register's restore on exception return switched off: a violation is
    found, with a short schedule."""
    s = explore(_cfg(arch, ["restore-on-return"]), BUDGET, stop_at_first=True)
    assert s.first is not None and len(s.first.schedule) <= 2
