"""What an attack campaign does: target classes, timings, attempts, the attacker's CPU.

Models the threat model of the kpkeys series (spec §1; v5 cover letter, "Threat
model"): the attacker owns a data-only arbitrary-write primitive (one 64-bit kernel
store to an address and value of their choice) used from one CPU running at the
default context; control flow is intact, so the attacker never writes the pkey
register (POR_EL1; IA32_PKRS on x86).

:func:`validate_attack` turns a scenario's ``[attack]`` table into an
:class:`AttackConfig` (an unknown key or a bad value is an ``InputError`` naming the
file and line: exit status 2). :func:`parse_list` serves the CLI's comma lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kpsim.errors import InputError
from kpsim.hw.arm64.system import MAX_CPUS

if TYPE_CHECKING:
    from kpsim.machine.scenario import AttackSpec

# Target classes, in report order.
TARGETS = (
    "user_pte",  # a victim process's PTE: map kernel memory into user space
    "linear_pte",  # linear-map PTE: make kernel text/rodata writable
    "linear_pmd",
    "linear_pud",
    "vmalloc_pte",  # a vmalloc area's PTE
    "kimage_pud",  # the kernel image's PUD entry (static table)
    "random",  # random 8-byte-aligned linear-map addresses
)
# Selectable by name, not part of "all": the image's static tables written through the
# kernel image's own (pkey 0, read-write data) mapping instead of the linear map.
EXTRA_TARGETS = ("kimage_alias",)

# When the write happens. In the threat model unless listed in OUTSIDE_THREAT_MODEL.
TIMINGS = (
    "rest",  # every CPU at rest in the default context
    "other_guard",  # another CPU is inside a kpkeys page-table guard
    "other_lazy_mmu",  # another CPU is inside a (batched) lazy-MMU section
    "other_busy",  # another CPU runs page-table work; the write fires after each PT write
    "own_irq",  # the attacker's CPU is inside a guard; the write runs in an IRQ taken there
    "own_guard",  # the attacker's own CPU is inside a guard (outside the threat model)
    "own_lazy_mmu",  # the attacker's own CPU is inside a batched section (outside)
)
OUTSIDE_THREAT_MODEL = frozenset({"own_guard", "own_lazy_mmu"})
NEEDS_OTHER_CPU = frozenset({"other_guard", "other_lazy_mmu", "other_busy"})
PRIMITIVES = ("write64",)

DEFAULT_ATTEMPTS = 8
DEFAULT_RANDOM_ATTEMPTS = 256
MAX_ATTEMPTS = 100_000

_KEYS = ("primitive", "targets", "timings", "attempts", "random_attempts", "cpu", "seed")


@dataclass(frozen=True, slots=True)
class AttackConfig:
    """A validated campaign. ``seed`` None: the machine's seed."""

    targets: tuple[str, ...] = TARGETS
    timings: tuple[str, ...] = TIMINGS
    attempts: int = DEFAULT_ATTEMPTS
    random_attempts: int = DEFAULT_RANDOM_ATTEMPTS
    cpu: int = 0
    seed: int | None = None
    primitive: str = "write64"

    def as_dict(self) -> dict[str, object]:
        return {
            "primitive": self.primitive,
            "targets": list(self.targets),
            "timings": list(self.timings),
            "attempts": self.attempts,
            "random_attempts": self.random_attempts,
            "attacker_cpu": self.cpu,
            "seed": self.seed,
        }


def parse_list(
    text: str, allowed: tuple[str, ...], noun: str, extra: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """``"a,b"`` or ``"all"`` -> names in ``allowed`` order; ``InputError`` otherwise."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return check_names(names, allowed, noun, extra)


def check_names(
    names: list[str], allowed: tuple[str, ...], noun: str, extra: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The names checked against ``allowed`` (+ ``extra``), in that order; ``all`` in
    the list stands for every name of ``allowed``."""
    every = allowed + extra
    if not names:
        raise InputError(f"empty list (use {', '.join(every)} or all)")
    for n in names:
        if n not in every and n != "all":
            raise InputError(f"unknown {noun} {n!r} (use {', '.join(every)} or all)")
    chosen = set(names) | (set(allowed) if "all" in names else set())
    return tuple(n for n in every if n in chosen)


def check_count(value: Any, low: int = 1, high: int = MAX_ATTEMPTS) -> int:
    """An integer in [low, high]; ``InputError`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InputError(f"must be between {low} and {high}, got {value}")
    return value


def validate_attack(spec: AttackSpec) -> AttackConfig:
    """The scenario's ``[attack]`` table as an :class:`AttackConfig` (exit 2 if bad)."""
    p = spec.params
    for key in p:
        if key not in _KEYS:
            raise spec.error(key, f"unknown key (use {', '.join(_KEYS)})")
    out: dict[str, Any] = {}
    try:
        for key in _KEYS:
            if key in p:
                out[key] = _value(key, p[key])
    except InputError as err:
        raise spec.error(key, err.problem) from None
    return AttackConfig(**out)


def _value(key: str, v: Any) -> Any:
    if key == "primitive":
        if v not in PRIMITIVES:
            raise InputError(f"unknown primitive {v!r} (use {', '.join(PRIMITIVES)})")
        return v
    if key in ("targets", "timings"):
        allowed = TARGETS if key == "targets" else TIMINGS
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
            raise InputError('must be a list of names or "all"')
        return check_names(v, allowed, key[:-1], EXTRA_TARGETS if key == "targets" else ())
    if key in ("attempts", "random_attempts"):
        return check_count(v)
    if key == "cpu":
        return check_count(v, 0, MAX_CPUS - 1)
    return check_count(v, 0, 2**64 - 1)  # seed


def config_from_options(
    *,
    targets: str,
    timings: str,
    attempts: int,
    random_attempts: int,
    cpu: int,
    ncpus: int,
    seed: int | None,
) -> AttackConfig:
    """The CLI's options as an :class:`AttackConfig`; a bad one is an ``InputError``
    naming the option (``--targets``, ``--timing``, ``--attempts``...)."""
    values: dict[str, Any] = {}
    checks = (
        ("--targets", "targets", lambda: parse_list(targets, TARGETS, "target", EXTRA_TARGETS)),
        ("--timing", "timings", lambda: parse_list(timings, TIMINGS, "timing")),
        ("--attempts", "attempts", lambda: check_count(attempts)),
        ("--random-attempts", "random_attempts", lambda: check_count(random_attempts)),
        ("--attacker-cpu", "cpu", lambda: check_count(cpu, 0, ncpus - 1)),
    )
    for option, key, check in checks:
        try:
            values[key] = check()
        except InputError as err:
            raise InputError(f"{option}: {err.problem}") from None
    return AttackConfig(**values, seed=seed)
