"""Attack campaigns on arm64 (POE): every in-threat-model page-table write is blocked
by the overlay with the feature on, from any CPU at any moment, on every allocator and
linear-map policy. The behaviours both architectures share (negative controls, the
other CPU's windows, the outside-threat-model rows, the unsafe split, one CPU, the
seed) are in tests/shared/test_attack.py; x86's own in test_attack_x86.py."""

import pytest

from kpsim.attack import AttackConfig, run_attack, validate_attack
from kpsim.attack.config import OUTSIDE_THREAT_MODEL, TARGETS, TIMINGS
from kpsim.audit.invariants import audit
from kpsim.errors import InputError
from kpsim.hw.arm64.esr import decode_esr
from kpsim.machine import MachineConfig, boot
from kpsim.machine.scenario import parse_scenario

ENTRY_CLASSES = tuple(t for t in TARGETS if t != "random")
INSIDE = tuple(t for t in TIMINGS if t not in OUTSIDE_THREAT_MODEL)


def _machine(linear_map, allocator, **kw):
    return pytest.param(
        {"linear_map": linear_map, "allocator": allocator, **kw},
        id="-".join([linear_map, allocator, *(k for k, v in kw.items() if v is False)]),
    )


PROTECTED = [
    _machine("pte", "minimal"),
    _machine("pte", "minimal", batching=False),
    _machine("block", "pba"),
    _machine("block", "pba", batching=False),
    _machine("pte", "grouped"),
    _machine("block", "reserve"),
]


def campaign(attempts=2, random_attempts=16, cpus=2, **machine):
    m = boot(MachineConfig(memory="256M", cpus=cpus, **machine))
    config = AttackConfig(attempts=attempts, random_attempts=random_attempts)
    return m, run_attack(m, config)


def by_class(rows):
    return {r.cls: r for r in rows}


@pytest.mark.parametrize("machine", PROTECTED)
def test_every_in_threat_model_write_is_blocked(machine):
    """Feature on: each entry class at each in-threat timing is blocked by the overlay."""
    m, report = campaign(**machine)
    rows = by_class(report.targets)
    assert report.feature_on and report.exit_status == 0
    for cls in ENTRY_CLASSES:
        r = rows[cls]
        assert set(r.by_timing) == set(INSIDE), cls
        for timing, row in r.by_timing.items():
            assert row["attempts"] == 2 and row["blocked"] == 2 and row["landed"] == 0, (
                cls,
                timing,
            )
            assert row["attacker_pkey1_writable"] == 0  # the attacker ran at the default context
        assert not r.gains and r.extra["tables_unkeyed"] == 0
    assert audit(m) == []  # the campaign left the machine as it found it


def test_blocked_write_is_an_overlay_permission_fault():
    """The ESR of a blocked write decodes as a data abort, write, permission, ISS2.Overlay."""
    _, report = campaign()
    for r in report.targets:
        if r.cls == "random":
            continue
        esr = decode_esr(int(r.blocked_esr, 16))
        assert esr["ec"] == "0x25" and esr["access"] == "write" and esr["overlay"] is True
        assert esr["fault"] == "level 3 permission fault"  # the leaf mapping the table page


def test_user_pte_gain_checked_by_el0_access():
    """A landed user PTE write lets the victim read and write a kernel page at EL0."""
    _, report = campaign(hardened_pgtables=False)
    ex = by_class(report.targets)["user_pte"].examples
    assert ex and all(e["el0_read"] and e["el0_write"] for e in ex)
    assert {e["checked_by"] for e in ex} == {"EL0 access"}
    assert {e["what"] for e in ex} <= {"kernel text", "kernel rodata", "page table"}


def test_random_writes_count_page_table_hits():
    """Random writes report their page-table hits: blocked with the feature on, landed off."""
    on = by_class(campaign(attempts=1, random_attempts=600)[1].targets)["random"]
    off = by_class(campaign(attempts=1, random_attempts=600, hardened_pgtables=False)[1].targets)[
        "random"
    ]
    assert on.attempts == off.attempts == 600 * len(INSIDE)
    assert on.extra["hit_page_tables"] > 0 and off.extra["hit_page_tables"] > 0
    # a hit on swapper_pg_dir faults on its base permission (read-only), not the overlay
    assert on.landed == 0
    assert on.blocked + on.other_outcomes.get("permission", 0) == on.extra["hit_page_tables"]
    assert off.blocked == 0
    assert off.landed + off.other_outcomes.get("permission", 0) == off.extra["hit_page_tables"]


def test_kimage_alias_lands_and_is_explained():
    """The image's static tables, written through the image's own mapping, are not covered."""
    m = boot(MachineConfig(memory="256M", cpus=2))
    report = run_attack(m, AttackConfig(targets=("kimage_alias",), timings=("rest",)))
    r = report.targets[0]
    assert r.landed == r.attempts and report.exit_status == 1
    assert any("kimage_alias" in n for n in report.notes)


def test_attacker_cpu_out_of_range():
    """An attacker CPU the machine lacks is an input error."""
    m = boot(MachineConfig(memory="256M", cpus=2))
    with pytest.raises(InputError, match="attacker cpu 2"):
        run_attack(m, AttackConfig(cpu=2))


SCENARIO = """[[workload]]
name = "x"

[attack]
primitive = "write64"
targets = ["user_pte", "random"]
timings = "all"
attempts = 3
cpu = 1
"""


def test_validate_attack_scenario():
    """A scenario's [attack] table becomes an AttackConfig."""
    cfg = validate_attack(parse_scenario(SCENARIO, "a.toml").attack)
    assert cfg.targets == ("user_pte", "random") and cfg.timings == TIMINGS
    assert cfg.attempts == 3 and cfg.cpu == 1


@pytest.mark.parametrize(
    "line, where, problem",
    [
        ("bogus = 1", "a.toml:5: [attack] bogus", "unknown key"),
        ('targets = ["pte"]', "a.toml:5: [attack] targets", "unknown target 'pte'"),
        ("attempts = 0", "a.toml:5: [attack] attempts", "between 1 and"),
        ('attempts = "3"', "a.toml:5: [attack] attempts", "must be an integer"),
        ('primitive = "read"', "a.toml:5: [attack] primitive", "unknown primitive"),
        ("timings = [1]", "a.toml:5: [attack] timings", "list of names"),
    ],
)
def test_validate_attack_rejects_bad_keys(line, where, problem):
    """A bad [attack] key is an InputError naming file, line, key and problem."""
    spec = parse_scenario('[[workload]]\nname = "x"\n[attack]\ncpu = 0\n' + line, "a.toml").attack
    with pytest.raises(InputError) as err:
        validate_attack(spec)
    assert str(err.value).startswith(where) and problem in str(err.value)


def test_any_attacker_cpu_of_four():
    """From the last CPU of four, with the victim and the busy CPU elsewhere: all blocked."""
    m = boot(MachineConfig(memory="256M", cpus=4))
    report = run_attack(m, AttackConfig(attempts=2, random_attempts=8, cpu=3))
    assert report.as_json()["attack"]["other_cpu"] == 0
    for r in report.targets:
        if r.cls != "random":
            assert r.blocked == r.attempts == 2 * len(INSIDE) and r.landed == 0


def test_busy_cpu_writes_fire_inside_batched_sections():
    """Some other_busy writes fire while the busy CPU's batched section has pkey 1 open."""
    _, report = campaign(attempts=6)
    opened = sum(r.by_timing["other_busy"]["window_open"] for r in report.targets)
    assert opened > 0
    assert all(r.by_timing["other_busy"]["landed"] == 0 for r in report.targets)
