"""The shared behaviour suite: the same tests on every architecture (issue 18, item 4).

Like py65's ``Common6502Tests`` (one body of tests, one subclass per CPU), each test
here takes ``arch`` from :func:`for_each_arch` and boots its machine with
:func:`machine`, so a behaviour is written once and checked on arm64 (POE) and x86
(PKS). Negative controls (the feature off, no pkey hardware) run on both too.

An x86 parameter that cannot pass yet is an explicit ``xfail(strict=True)`` naming
what x86 lacks (:data:`X86_MISSING`): it fails if the test starts passing, so the
entry is removed the moment the piece lands. Nothing here is skipped.
"""

from __future__ import annotations

from typing import Any

import pytest

from kpsim.machine import MachineConfig, boot

ARCHES = ("arm64", "x86")

#: the x86 machine exists once MachineConfig takes ``arch`` (boot dispatch, arch/x86)
X86_MACHINE = "arch" in MachineConfig.__dataclass_fields__
_NO_MACHINE = "no x86 machine on main yet (MachineConfig.arch and the boot dispatch)"

#: what an area of the suite (``area`` or ``area:case``) lacks on x86 once the x86
#: machine exists; an area absent here runs on x86
X86_MISSING: dict[str, str] = {}


def x86_gap(area: str, case: str | None = None) -> str | None:
    """Why ``area`` (or its ``case``) cannot pass on x86 yet, or None."""
    if not X86_MACHINE:
        return _NO_MACHINE
    return X86_MISSING.get(area) or (X86_MISSING.get(f"{area}:{case}") if case else None)


def for_each_arch(area: str) -> pytest.MarkDecorator:
    """Parametrize a test over ``arch``; x86 is a strict xfail while ``area`` lacks it."""
    return pytest.mark.parametrize("arch", arch_params(area))


def arch_params(area: str, case: str | None = None) -> list[Any]:
    """``arch`` parameters: arm64, and x86 as a strict xfail naming its gap if any."""
    params = []
    for arch in ARCHES:
        why = x86_gap(area, case) if arch == "x86" else None
        marks = [pytest.mark.xfail(strict=True, reason=f"x86: {why}")] if why else []
        params.append(pytest.param(arch, marks=marks, id=arch))
    return params


def config(arch: str, **kw: Any) -> MachineConfig:
    """A machine configuration of ``arch`` (256M unless ``memory`` is given);
    ``pkeys=False`` is a CPU without the pkey hardware (arm64 FEAT_S1POE, x86 PKS)."""
    kw.setdefault("memory", "256M")
    if "pkeys" in kw:
        kw["poe"] = kw.pop("pkeys")
    if arch != "arm64":
        kw["arch"] = arch
    return MachineConfig(**kw)


def machine(arch: str, **kw: Any) -> Any:
    """A booted machine of ``arch`` (:func:`config`'s arguments)."""
    return boot(config(arch, **kw))
