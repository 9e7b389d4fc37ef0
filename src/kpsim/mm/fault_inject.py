"""Fault injection: ``lib/fault-inject.c`` (``should_fail_ex``) and ``mm/fail_page_alloc.c``.

A :class:`FaultAttr` is ``struct fault_attr``: ``probability`` (percent, 0..100),
``interval`` (only every interval-th eligible call may fail), ``times`` (how many
failures in all, -1 for no limit), ``space`` (a budget of "size" consumed before any
failure), ``verbose`` (0: silent; 1: each forced failure is recorded with its site
and call number, ``fail_dump()``'s "FAULT_INJECTION: forcing a failure." notice).
:meth:`FaultAttr.should_fail` checks them in ``should_fail_ex()``'s order: probability
0, times exhausted, space, interval, then the random draw.

Specs are written as Linux's boot parameters are (``fail_page_alloc=`` and
``setup_fault_attr()``): ``"<interval>,<probability>,<space>,<times>"``, or as
``key=value`` pairs (``"probability=10,times=100"``), which also reach the debugfs-only
attributes: for the page allocator ``min_order``, ``ignore_gfp_reclaim`` and
``ignore_gfp_highmem`` (``should_fail_alloc_page()``), for ``set_memory_pkey``
kpsim's own ``unkey`` (also fail the calls that put pages back to the default pkey).

Sites (each a :data:`SITES` name, a ``fail_<site>`` kernel option):

- ``page_alloc``: ``alloc_pages()`` fails before taking a block
  (``should_fail_alloc_page()`` in ``prepare_alloc_pages()``); never ``__GFP_NOFAIL``;
- ``pagetable_alloc``: ``pagetable_alloc()`` returns NULL (no Linux knob: the table
  door alone, so that user pages keep coming);
- ``set_memory_pkey``: returns -ENOMEM before changing anything (what a failed
  split allocation inside it returns);
- ``split``: ``split_kernel_leaf_mapping()`` fails its table allocation (-ENOMEM);
- ``pba_refill``: the block allocator's ``__refill_pages()`` gets no pages.

Determinism (DESIGN.md): Linux draws from a per-CPU prandom state; here each site
has its own ``random.Random`` seeded from the machine seed and the site name, so a
run is repeatable and one site's draws do not shift another's.

Departures (docs/fidelity.md): the page allocator's defaults are ``min_order=0`` and
``ignore_gfp_reclaim=0`` (Linux: 1 and Y, under which no order-0 GFP_KERNEL request
would ever fail); no ``fail-nth``, task filter or stack-trace filter; injection is
armed once boot is done (a boot parameter arms it from the start, but a model boot
has no failure path to exercise).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kpsim.errors import ConfigError
from kpsim.mm.gfp import Gfp

SITES = ("page_alloc", "pagetable_alloc", "set_memory_pkey", "split", "pba_refill")
_COMMON = ("probability", "interval", "times", "space", "verbose")
_EXTRA: dict[str, tuple[str, ...]] = {
    "page_alloc": ("min_order", "ignore_gfp_reclaim", "ignore_gfp_highmem"),
    "set_memory_pkey": ("unkey",),
}
#: forced failures kept in ``FaultAttr.log`` with verbose=1 (the rest only counted)
LOG_LIMIT = 64
_NOFAIL = int(Gfp.NOFAIL)
_RECLAIM = int(Gfp.DIRECT_RECLAIM)
_HIGHMEM = int(getattr(Gfp, "HIGHMEM", 0))


@dataclass(frozen=True)
class FaultSpec:
    """A parsed ``fail_<site>`` value (the attributes, not the state)."""

    site: str
    probability: int = 100
    interval: int = 1
    times: int = 1
    space: int = 0
    verbose: int = 0
    extra: tuple[tuple[str, int], ...] = ()

    def option(self, name: str, default: int = 0) -> int:
        return dict(self.extra).get(name, default)

    def as_dict(self) -> dict[str, int]:
        out = {k: getattr(self, k) for k in _COMMON}
        out.update(self.extra)
        return out


def _int(site: str, key: str, text: str) -> int:
    t = text.strip()
    try:
        return int(t, 0) if t.lstrip("-")[:2].lower() in ("0x", "0o", "0b") else int(t)
    except ValueError:
        raise ConfigError(f"fail_{site}: {key} must be an integer, got {t!r}") from None


def parse_fault_spec(site: str, text: object) -> FaultSpec:
    """``"<interval>,<probability>,<space>,<times>"`` or ``key=value,...`` for ``site``."""
    if site not in SITES:
        raise ConfigError(f"unknown fault-injection site {site!r} (use {', '.join(SITES)})")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f'fail_{site}: must be a string such as "1,10,0,-1" '
            f'(interval,probability,space,times) or "probability=10,times=100"'
        )
    parts = [p.strip() for p in text.split(",")]
    values: dict[str, int] = {}
    if all("=" not in p for p in parts):
        if len(parts) != 4:
            raise ConfigError(
                f"fail_{site}: {text!r}: expected interval,probability,space,times "
                f"(4 integers), got {len(parts)} field(s)"
            )
        for key, p in zip(("interval", "probability", "space", "times"), parts, strict=True):
            values[key] = _int(site, key, p)
    else:
        allowed = _COMMON + _EXTRA.get(site, ())
        for p in parts:
            key, sep, val = p.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in allowed:
                raise ConfigError(
                    f"fail_{site}: unknown attribute {key or p!r} (use {', '.join(allowed)})"
                )
            if key in values:
                raise ConfigError(f"fail_{site}: {key} given twice")
            values[key] = _int(site, key, val)
    return _checked(site, values)


def _checked(site: str, v: dict[str, int]) -> FaultSpec:
    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"fail_{site}: {key} must be {what}, got {v[key]}")

    if not 0 <= v.get("probability", 100) <= 100:
        raise bad("probability", "a percentage from 0 to 100")
    if not 1 <= v.get("interval", 1) <= 1 << 31:
        raise bad("interval", "from 1 to 2^31")
    if not -1 <= v.get("times", 1) <= 1 << 31:
        raise bad("times", "-1 (no limit) or from 0 to 2^31")
    if not 0 <= v.get("space", 0) <= 1 << 40:
        raise bad("space", "from 0 to 2^40")
    if not 0 <= v.get("verbose", 0) <= 2:
        raise bad("verbose", "0, 1 or 2")
    for key in ("ignore_gfp_reclaim", "ignore_gfp_highmem", "unkey"):
        if key in v and v[key] not in (0, 1):
            raise bad(key, "0 or 1")
    if not 0 <= v.get("min_order", 0) <= 10:
        raise bad("min_order", "from 0 to 10")
    extra = tuple((k, v[k]) for k in _EXTRA.get(site, ()) if k in v)
    common = {k: v[k] for k in _COMMON if k in v}
    return FaultSpec(site, extra=extra, **common)


@dataclass
class FaultAttr:
    """``struct fault_attr`` with its state: calls seen, failures forced, draws."""

    spec: FaultSpec
    rng: random.Random
    times: int = 0
    space: int = 0
    count: int = 0
    calls: int = 0
    injected: int = 0
    log: list[str] = field(default_factory=list)
    suspended: bool = False
    #: a failure drawn ahead by :meth:`alloc_page_run` and not yet delivered
    pending: bool = False

    @classmethod
    def make(cls, spec: FaultSpec, seed: int) -> FaultAttr:
        rng = random.Random(f"kpsim-fault-inject:{seed}:{spec.site}")
        return cls(spec, rng, times=spec.times, space=spec.space)

    def should_fail(self, size: int = 1, where: str = "") -> bool:
        """``should_fail_ex(attr, size, 0)``: True when this call is to fail."""
        self.calls += 1
        s = self.spec
        if s.probability == 0 or self.times == 0 or self.suspended:
            return False
        if self.space > size:
            self.space -= size
            return False
        if s.interval > 1:
            self.count += 1
            if self.count % s.interval:
                return False
        if s.probability <= self.rng.randrange(100):
            return False
        self.injected += 1
        if s.verbose and len(self.log) < LOG_LIMIT:  # fail_dump()
            self.log.append(f"{s.site} call {self.calls}: forcing a failure{where}")
        if self.times != -1:
            self.times -= 1
        return True

    def should_fail_alloc_page(self, gfp: int, order: int) -> bool:
        """``should_fail_alloc_page()``: the page allocator's filters, then should_fail."""
        if self.pending and not self.suspended:  # drawn by alloc_page_run: this call's
            self.pending = False
            return True
        s = self.spec
        if order < s.option("min_order") or gfp & _NOFAIL:
            return False
        if s.option("ignore_gfp_highmem") and gfp & _HIGHMEM:
            return False
        if s.option("ignore_gfp_reclaim") and gfp & _RECLAIM:
            return False
        return self.should_fail(1 << order, f" (gfp {gfp:#x}, order {order})")

    def alloc_page_run(self, gfp: int, order: int, n: int) -> int:
        """How many of ``n`` successive ``should_fail_alloc_page(gfp, order)`` calls pass.

        The vectorised fault path (``mm/fault_batch.py``) allocates a run of pages at
        once; it asks here first, so that the draws are the ones the page-at-a-time path
        makes, in the same order. The first call that fails is kept pending and is
        delivered to the next ``should_fail_alloc_page`` call: the one-at-a-time fault
        that the batch leaves that page to, which then meets the failure exactly where
        the loop would.
        """
        if self.pending:
            return 0
        for i in range(n):
            if self.should_fail_alloc_page(gfp, order):
                self.pending = True
                return i
        return n

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "spec": self.spec.as_dict(),
            "calls": self.calls,
            "injected": self.injected,
            "times_left": self.times,
        }
        if self.log:
            out["log"] = list(self.log)
        return out


class FaultInjection:
    """Every armed site of one machine (``attrs`` by site name)."""

    __slots__ = ("attrs",)

    def __init__(self, specs: dict[str, FaultSpec], seed: int) -> None:
        self.attrs = {site: FaultAttr.make(spec, seed) for site, spec in specs.items()}

    def get(self, site: str) -> FaultAttr | None:
        return self.attrs.get(site)

    @property
    def injected(self) -> int:
        return sum(a.injected for a in self.attrs.values())

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """No site fails inside (an error path that Linux knows cannot fail)."""
        saved = [(a, a.suspended) for a in self.attrs.values()]
        for a, _ in saved:
            a.suspended = True
        try:
            yield
        finally:
            for a, was in saved:
                a.suspended = was

    def as_dict(self) -> dict[str, object]:
        return {site: a.as_dict() for site, a in self.attrs.items()}
