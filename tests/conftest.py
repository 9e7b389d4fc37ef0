"""Test-suite configuration: Hypothesis profiles.

Locally, property tests draw new random examples on every run (and keep the failures
they find in .hypothesis/). CI (``.ci/run`` sets ``HYPOTHESIS_PROFILE=ci``) runs them
derandomized, so a landing is judged on a fixed, reproducible set of examples; a new
counterexample found locally becomes a regression test. In both, no example has a
deadline and no run fails Hypothesis's "too slow" health check: those two are checks
on time, and a loaded host (or two pytest-xdist workers on two cores) would fail them
with nothing wrong; tests never assert on time (speed is measured in benchmarks/).
"""

from __future__ import annotations

import ast
import functools
import importlib
import os
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

_UNTIMED: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, print_blob=True, **_UNTIMED)
settings.register_profile("local", **_UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "local"))


def pytest_report_header(config: object) -> str:
    """Say whether this run tests the compiled core or pure Python (src/kpsim/_core.py)."""
    from kpsim import _core

    return f"kpsim core: {_core.STATE}"


@functools.cache
def _final_names(module: str) -> frozenset[str]:
    """The module-level names the source of ``module`` declares ``Final`` (compiled code
    inlines or caches them, so patching them misses compiled readers)."""
    from kpsim import _core

    path = _core.PACKAGE_DIR.parent.joinpath(*module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text())
    return frozenset(
        n.target.id
        for n in tree.body
        if isinstance(n, ast.AnnAssign)
        and isinstance(n.target, ast.Name)
        and "Final" in ast.unparse(n.annotation)
    )


def _patches_compiled_code(target: object, name: str) -> bool:
    """Whether ``setattr(target, name, ...)`` would miss callers in the compiled core.

    Compiled code calls the functions and native-class methods of compiled modules
    directly and inlines their ``Final`` constants, so replacing one has no effect on
    compiled callers; other module-level data (thresholds, pools) is read from the
    module at run time, so patching it works.
    """
    from kpsim import _core

    if isinstance(target, types.ModuleType):
        if not _core.is_compiled(target):
            return False
        return callable(getattr(target, name, None)) or name in _final_names(target.__name__)
    cls = target if isinstance(target, type) else type(target)
    return any(hasattr(c, "__mypyc_attrs__") for c in cls.__mro__)


def _guard_monkeypatch() -> None:
    """With the compiled core loaded, a test that monkeypatches compiled code is skipped
    here, saying so; ``make test`` runs tests/hw, tests/mm and tests/kpkeys again as
    pure Python (KPSIM_PURE=1), where the patch takes effect."""
    from kpsim import _core

    if _core.STATE != "compiled":
        return
    orig = pytest.MonkeyPatch.setattr

    def setattr_(self: pytest.MonkeyPatch, target: Any, name: Any, *a: Any, **k: Any) -> None:
        obj, attr = target, name
        if isinstance(target, str) and not a and "value" not in k:  # ("pkg.mod.attr", value)
            path, attr = target.rsplit(".", 1)
            obj = importlib.import_module(path.split(".")[0])
            for part in path.split(".")[1:]:
                obj = getattr(obj, part)
        if isinstance(attr, str) and _patches_compiled_code(obj, attr):
            where = getattr(obj, "__name__", type(obj).__name__)
            pytest.skip(
                f"monkeypatches compiled code ({where}.{attr}); runs in make test's "
                "pure-Python step (KPSIM_PURE=1)"
            )
        orig(self, target, name, *a, **k)

    pytest.MonkeyPatch.setattr = setattr_  # type: ignore[method-assign]


_guard_monkeypatch()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pure_python(reason): needs the pure-Python build (e.g. duck-typed fakes in place "
        "of compiled classes); skipped with the compiled core, run by make test's "
        "KPSIM_PURE=1 step",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    from kpsim import _core

    mark = item.get_closest_marker("pure_python")
    if mark is not None and _core.STATE == "compiled":
        why = mark.args[0] if mark.args else "needs pure Python"
        pytest.skip(f"{why}; runs in make test's pure-Python step (KPSIM_PURE=1)")
