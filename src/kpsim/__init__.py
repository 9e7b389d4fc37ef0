"""kpsim: an executable model of Linux's pkeys-based page-table hardening on arm64.

Scripting entry point::

    import kpsim
    m = kpsim.boot(memory="1G", cpus=2)      # hardened_pgtables on, PTE-mapped linear map
    try:
        m.hw.cpus[0].store(va, value)       # a kernel store, checked by the MMU
    except kpsim.AccessFault as e:
        print(e.fault.esr)                  # the ESR_EL1 a real CPU would report

Public names (``__all__``): :func:`boot`, :class:`Machine`, :class:`MachineConfig` and
the error tree rooted at :class:`KpsimError`. ``boot``, ``Machine`` and
``MachineConfig`` are loaded lazily so that importing a low layer never pulls in the
whole model. docs/api.md is the reference generated from these docstrings.
"""

from __future__ import annotations

from typing import Any

from kpsim import _core

_core.install()  # before anything imports a module the compiled core may replace

from kpsim.errors import (  # noqa: E402 - after the compiled core's finder is in place
    AccessFault,
    ConfigError,
    InputError,
    KpsimError,
    ModelInvariantError,
    OutOfMemory,
)

__all__ = [
    "AccessFault",
    "ConfigError",
    "InputError",
    "KpsimError",
    "Machine",
    "MachineConfig",
    "ModelInvariantError",
    "OutOfMemory",
    "boot",
]
__version__ = "0.1.0"

_LAZY = frozenset({"Machine", "MachineConfig", "boot"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kpsim import machine

        return getattr(machine, name)
    raise AttributeError(f"module 'kpsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
