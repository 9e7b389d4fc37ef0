"""kpsim: an executable model of Linux's pkeys-based page-table hardening on arm64.

Scripting entry point::

    import kpsim
    m = kpsim.boot(memory="1G", cpus=2)

``boot`` and ``Machine`` are loaded lazily so that importing a low layer never
pulls in the whole model.
"""

from __future__ import annotations

from typing import Any

from kpsim import _core

_core.install()  # before anything imports a module the compiled core may replace

__all__ = ["Machine", "boot"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kpsim import machine

        return getattr(machine, name)
    raise AttributeError(name)
