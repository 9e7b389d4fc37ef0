"""Test-suite configuration: Hypothesis profiles.

Locally, property tests draw new random examples on every run (and keep the failures
they find in .hypothesis/). CI (``.ci/run`` sets ``HYPOTHESIS_PROFILE=ci``) runs them
derandomized, so a landing is judged on a fixed, reproducible set of examples; a new
counterexample found locally becomes a regression test.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_report_header(config: object) -> str:
    """Say whether this run tests the compiled core or pure Python (src/kpsim/_core.py)."""
    from kpsim import _core

    return f"kpsim core: {_core.STATE}"
