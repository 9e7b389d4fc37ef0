"""The host's cyclic garbage collector around bulk paths (a simulator detail).

A batch that fills the TLB for thousands of pages creates as many long-lived tuples;
CPython's cyclic collector would run every 700 of them and, as they accumulate, scan
the growing TLB dictionaries again and again. None of these objects forms a cycle, so
pausing the collector for the length of the batch frees nothing later than reference
counting does; collection resumes (with its counts where the batch left them) when
the batch ends. Nothing the model computes depends on it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the body with the cyclic collector off (left as it was if already off)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
