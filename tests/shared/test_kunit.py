"""The kernel's KUnit suite ``kpkeys_hardened_pgtables`` on every architecture: each
case passes with the feature on, each fails with it off (the negative control), and
every case skips on CPUs without the pkey hardware."""

from __future__ import annotations

import pytest

from kpsim.kpkeys.kunit import CASES, run_suite

from .rig import arch_params, for_each_arch, machine

NAMES = [name for name, _ in CASES]


def _case(doc, name):
    return next(c for c in doc["cases"] if c["name"] == name)


def _per_case():
    return [
        pytest.param(p.values[0], name, marks=p.marks, id=f"{name}-{p.id}")
        for name in NAMES
        for p in arch_params("kunit", name)
    ]


@pytest.mark.parametrize(("arch", "name"), _per_case())
def test_case_passes_with_the_feature_on(arch, name):
    """The write to the case's page-table entry from the default context is -EFAULT."""
    case = _case(run_suite(machine(arch)), name)
    assert case["status"] == "pass", case["message"]
    assert case["checks"] and all(c["result"] == c["expected"] for c in case["checks"])


@pytest.mark.parametrize(("arch", "name"), _per_case())
def test_negative_control_case_fails_with_the_feature_off(arch, name):
    """Feature off: the same write lands, so the case fails saying so."""
    case = _case(run_suite(machine(arch, hardened_pgtables=False)), name)
    assert case["status"] == "fail" and "succeeded" in case["message"]
    assert case["checks"] and all(c["result"] == 0 for c in case["checks"])


@for_each_arch("kunit")
def test_every_case_skips_without_pkey_hardware(arch):
    """No pkey hardware (arm64 FEAT_S1POE, x86 PKS): kpkeys unsupported, cases skip."""
    doc = run_suite(machine(arch, pkeys=False))
    assert (doc["passed"], doc["failed"], doc["skipped"]) == (0, 0, len(NAMES))
    assert all(c["checks"] == [] for c in doc["cases"])
