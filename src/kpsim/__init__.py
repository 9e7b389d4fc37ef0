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

import os
from typing import Any


def _numpy_single_threaded() -> None:
    """Import numpy with OpenBLAS limited to one thread, then give the environment back.

    The model is single-threaded and makes no large matrix products: OpenBLAS's worker
    threads (one per core by default) would only spin beside it and take the other core
    of a small host (about 2k instructions per simulated fault, measured with
    callgrind). A value the user set is kept; the programs kpsim starts (``kpsim
    record``'s command) see the environment unchanged."""
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import numpy  # noqa: F401 - OpenBLAS reads the variable when it loads
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]


_numpy_single_threaded()

from kpsim import _core  # noqa: E402

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
