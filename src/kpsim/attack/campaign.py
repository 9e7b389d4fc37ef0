"""Run an attack campaign on a booted machine and report what got through.

For every target class and timing, the attacker makes ``attempts`` writes (random
addresses: ``random_attempts``) from the chosen CPU. A write is *blocked* when the
store takes the fault the pkey hardware raises for it, read as the kernel's fault
handler would (arm64: a permission fault whose ESR has ISS2.Overlay set, decoded
with :func:`kpsim.hw.arm64.esr.decode_esr` as ``do_page_fault`` sees it; x86: a #PF
whose error code has P, W and PK set, as ``do_kern_addr_fault`` sees it with PKS;
:mod:`kpsim.attack.arm64`, :mod:`kpsim.attack.x86`); it *landed* when the store
completed. Each landed write is judged for what it gained
(:mod:`kpsim.attack.targets`) and then undone by the campaign, so every attempt meets
the same machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kpsim.attack import targets as tg
from kpsim.attack.config import NEEDS_OTHER_CPU, OUTSIDE_THREAT_MODEL, AttackConfig
from kpsim.attack.ops import AttackOps
from kpsim.attack.timing import busy_windows, pgtables_writable, write_at
from kpsim.errors import InputError
from kpsim.machine.boot import Machine

MAX_EXAMPLES = 3
_UNPROTECTED_NOTE = {
    "arm64": "some target tables were left unprotected by a recursive linear-map split "
    "(minimal allocator on a block-mapped linear map, --allow-unsafe-split)",
    "x86": "some target tables were left unprotected by a recursive split (the minimal "
    "or grouped allocator: on a block-mapped direct map, or the image mapping's split "
    "that keying the static tables makes, even on a 4K direct map)",
}
_KIMAGE_ALIAS_NOTE = {
    "arm64": "kimage_alias: the image's static tables are keyed through their linear-map "
    "alias only; their alias in the kernel image's read-write data mapping carries "
    "pkey 0, so a write through it lands (see docs/attack.md)",
    "x86": "kimage_alias: a write to a table of the kernel image mapping landed: the "
    "table a split of an image 2 MiB page needed when the static tables were keyed "
    "(outside the image, written through the direct map) was left unkeyed "
    "(see docs/attack.md)",
}
_ROW = ("attempts", "blocked", "landed", "window_open", "attacker_pkey1_writable")
Fault = Any  # the architecture's fault value (arm64 ``Fault``, x86 ``PageFault``...)


@dataclass
class ClassResult:
    """Counts for one target class, over the timings of one threat-model side; the
    first blocked fault in the architecture's words (``ops.blocked_fields``)."""

    cls: str
    ops: AttackOps
    attempts: int = 0
    blocked: int = 0
    landed: int = 0
    other_outcomes: dict[str, int] = field(default_factory=dict)
    gains: dict[str, int] = field(default_factory=dict)
    by_timing: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, object]] = field(default_factory=list)
    blocked_fault: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blocked_fault = self.ops.blocked_fields(None)

    @property
    def blocked_esr(self) -> str | None:
        """arm64: the first blocked write's ESR_EL1 (hex), None if none was blocked."""
        v = self.blocked_fault.get("blocked_esr")
        return None if v is None else str(v)

    def record(self, timing: str, outcome: str, window: bool, own: bool, f: Fault | None) -> None:
        """Count one write; ``window``: pkey 1 writable on the CPU the timing concerns;
        ``own``: pkey 1 writable on the attacker's CPU when its store executed."""
        self.attempts += 1
        row = self.by_timing.setdefault(timing, dict.fromkeys(_ROW, 0))
        row["attempts"] += 1
        row["window_open"] += window
        row["attacker_pkey1_writable"] += own
        if outcome in ("blocked", "landed"):
            row[outcome] += 1
            setattr(self, outcome, getattr(self, outcome) + 1)
        else:
            self.other_outcomes[outcome] = self.other_outcomes.get(outcome, 0) + 1
        if outcome == "blocked" and self._first_blocked and f is not None:
            self.blocked_fault = self.ops.blocked_fields(f)

    @property
    def _first_blocked(self) -> bool:
        return all(v is None for v in self.blocked_fault.values())

    def gained(self, gain: dict[str, object] | None, example: dict[str, object]) -> None:
        if gain is not None:
            kind = str(gain["gain"])
            self.gains[kind] = self.gains.get(kind, 0) + 1
            example = {**example, **gain}
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def as_json(self) -> dict[str, object]:
        return {
            "class": self.cls,
            "attempts": self.attempts,
            "blocked": self.blocked,
            "landed": self.landed,
            "other_outcomes": self.other_outcomes,
            "gains": self.gains,
            **self.extra,
            "by_timing": self.by_timing,
            **self.blocked_fault,
            "landed_examples": self.examples,
        }


@dataclass
class AttackReport:
    """The campaign's result: in-threat-model classes, the rest, and what was skipped."""

    machine: dict[str, object]
    attack: dict[str, object]
    feature_on: bool
    targets: list[ClassResult]
    outside: list[ClassResult]
    skipped: list[dict[str, str]]
    notes: list[str]

    @property
    def landed_in_threat_model(self) -> int:
        return sum(c.landed for c in self.targets)

    @property
    def exit_status(self) -> int:
        """1 if a write in the threat model landed while the feature was on."""
        return 1 if self.feature_on and self.landed_in_threat_model else 0

    def as_json(self) -> dict[str, object]:
        return {
            "machine": self.machine,
            "attack": self.attack,
            "feature_on": self.feature_on,
            "targets": [c.as_json() for c in self.targets],
            "outside_threat_model": [c.as_json() for c in self.outside],
            "skipped": self.skipped,
            "notes": self.notes,
            "landed_in_threat_model": self.landed_in_threat_model,
            "exit_status": self.exit_status,
        }


def run_attack(m: Machine, config: AttackConfig) -> AttackReport:
    """Run the campaign ``config`` on the booted machine ``m``."""
    if not 0 <= config.cpu < m.config.cpus:
        raise InputError(f"attacker cpu {config.cpu}: the machine has {m.config.cpus} CPU(s)")
    seed = m.config.seed if config.seed is None else config.seed
    rng = random.Random(seed)
    arena = tg.build_arena(m, config.cpu)
    report = AttackReport(
        m.config.as_dict(),
        {
            **config.as_dict(),
            "seed": seed,
            "victim_cpu": arena.victim.cpu,
            "other_cpu": arena.other,
        },
        bool(m.arch.hardened_pgtables),
        [],
        [],
        [],
        [],
    )
    for cls in config.targets:
        inside, outside = ClassResult(cls, arena.ops), ClassResult(cls, arena.ops)
        for timing in config.timings:
            if timing in NEEDS_OTHER_CPU and arena.other is None:
                report.skipped.append({"class": cls, "timing": timing, "reason": "one CPU"})
                continue
            res = outside if timing in OUTSIDE_THREAT_MODEL else inside
            _campaign(arena, config, cls, timing, rng, res, report)
        for res, out in ((inside, report.targets), (outside, report.outside)):
            if res.attempts:
                out.append(res)
    _notes(m, arena, report)
    return report


def _campaign(
    arena: tg.Arena,
    config: AttackConfig,
    cls: str,
    timing: str,
    rng: random.Random,
    res: ClassResult,
    report: AttackReport,
) -> None:
    """The attempts of one class at one timing, counted into ``res``."""
    if cls == "random":
        attempt = _random_attempt(arena, rng, res, timing)
        n = config.random_attempts
    else:
        order = tg.table_order(arena, cls, rng)
        if not order:
            report.skipped.append(
                {"class": cls, "timing": timing, "reason": f"no {cls} table on this machine"}
            )
            return
        _table_stats(arena, cls, order, res)
        attempt = _entry_attempt(arena, cls, order, rng, res, timing)
        n = config.attempts
    if timing == "other_busy":
        assert arena.worker is not None
        busy_windows(arena.arch, arena.worker, arena.m.k, n, lambda w: attempt(w, False))
    else:
        for _ in range(n):
            attempt(None, True)


def _table_stats(arena: tg.Arena, cls: str, order: list[tg.Table], res: ClassResult) -> None:
    keyed = sum(tg.is_keyed(arena.m, pa, arena.ops) for pa, _, _ in order)
    unprotected: set[int] = getattr(arena.m.kpkeys, "unprotected", set())
    res.extra = {
        "tables": len(order),
        "tables_unkeyed": len(order) - keyed,
        "tables_left_unprotected_by_split": sum((pa >> 12) in unprotected for pa, _, _ in order),
    }


def _entry_attempt(
    arena: tg.Arena,
    cls: str,
    order: list[tg.Table],
    rng: random.Random,
    res: ClassResult,
    timing: str,
) -> Any:
    """A function making one attempt on the class (``window`` None: open it by ``timing``)."""
    arch, a = arena.arch, arena.attacker
    cpu = arena.m.hw.cpus[a]
    own = [False]

    def attempt(window: bool | None, live: bool) -> None:
        table = order[res.by_timing.get(timing, {}).get("attempts", 0) % len(order)]
        t = tg.pick_target(arena, cls, table, rng)
        old = arena.m.mem.read64(t.entry_pa)

        def write() -> Fault | None:
            own[0] = pgtables_writable(arch, a)
            got: Fault | None = cpu.try_store(t.ptr, t.value)
            return got

        if window is None:
            f, window = write_at(arch, timing, a, arena.other, write)
        else:
            with arch.on_cpu(a):
                f = write()
        outcome = arena.ops.classify(f)
        res.record(timing, outcome, window, own[0], f)
        if outcome == "landed":
            gain = (
                tg.user_gain(arena, t, old, live=live)
                if cls == "user_pte"
                else tg.kernel_gain(arena, t, old)
            )
            res.gained(gain, _example(t, timing))
            tg.restore(arena, t.entry_pa, old)

    return attempt


def _example(t: tg.Target, timing: str) -> dict[str, object]:
    return {
        "timing": timing,
        "ptr": f"{t.ptr:#x}",
        "level": t.level,
        "value": f"{t.value:#018x}",
        "table_keyed": t.table_keyed,
    }


def _random_attempt(arena: tg.Arena, rng: random.Random, res: ClassResult, timing: str) -> Any:
    """One write of a random value to a random 8-byte slot of the linear map of RAM."""
    m, a = arena.m, arena.attacker
    cpu = m.hw.cpus[a]
    res.extra.setdefault("hit_page_tables", 0)
    live = m.k.pgtable.live
    own = [False]

    def attempt(window: bool | None, _live: bool) -> None:
        pa = m.config.dram_base + 8 * rng.randrange(m.config.memory >> 3)
        va, value, old = m.arch.phys_to_virt(pa), rng.getrandbits(64), m.mem.read64(pa)
        hit = (pa >> 12) in live

        def write() -> Fault | None:
            own[0] = pgtables_writable(m.arch, a)
            got: Fault | None = cpu.try_store(va, value)
            return got

        if window is None:
            f, window = write_at(m.arch, timing, a, arena.other, write)
        else:
            with m.arch.on_cpu(a):
                f = write()
        outcome = arena.ops.classify(f)
        if outcome in ("landed", "blocked", "permission") and not hit:
            # not a table: a landed write is no page-table corruption; a blocked one hit
            # a keyed page the allocator caches (pba, grouped, reserve); a base-permission
            # fault hit the read-only linear alias of kernel text/rodata
            outcome += "_off_page_tables"
        res.extra["hit_page_tables"] = int(str(res.extra["hit_page_tables"])) + hit
        res.record(timing, outcome, window, own[0], f)
        if f is None:
            tg.restore(arena, pa, old)

    return attempt


def _notes(m: Machine, arena: tg.Arena, report: AttackReport) -> None:
    ops = arena.ops
    if not report.feature_on:
        why = f"no {ops.hw}" if not m.config.poe else "kpkeys_hardened_pgtables off"
        report.notes.append(f"feature off ({why}): negative control, writes are expected to land")
    if any(c.cls == "kimage_alias" and c.landed for c in report.targets):
        report.notes.append(_KIMAGE_ALIAS_NOTE[ops.name])
    if any(c.extra.get("tables_left_unprotected_by_split") for c in report.targets):
        report.notes.append(_UNPROTECTED_NOTE[ops.name])
