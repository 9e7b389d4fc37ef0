"""Fixtures the x86 arch tests share: booting an x86 machine, and a kernel store whose
#PF error code is the verdict."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.x86.fault import PageFault
from kpsim.machine.boot import Machine


@pytest.fixture
def boot_x86() -> Callable[..., Machine]:
    """``boot_x86(**kw)``: a 1 GiB x86 machine with a 4 KiB direct map; ``kw`` goes to
    ``Machine.boot`` (``cpus=``, ``hardened_pgtables=``...)."""

    def boot(**kw: object) -> Machine:
        return Machine.boot(arch="x86", memory="1G", linear_map="pte", **kw)

    return boot


@pytest.fixture
def store_error_code() -> Callable[[Machine, int, int, int], int]:
    """``store_error_code(m, cpu, va, value)``: store ``value`` at kernel ``va`` on
    ``cpu``; the #PF error code it raised, or 0 when the store went through."""

    def store(m: Machine, cpu: int, va: int, value: int) -> int:
        try:
            m.hw.cpus[cpu].store(va, value)
        except AccessFault as exc:
            assert isinstance(exc.fault, PageFault)
            return int(exc.fault.error_code)
        return 0

    return store
