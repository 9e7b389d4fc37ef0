"""Attack campaigns on the x86 machine (PKS): what only x86 shows. The behaviours both
architectures share are in tests/shared/test_attack.py."""

from kpsim.attack import AttackConfig, run_attack
from kpsim.attack.config import OUTSIDE_THREAT_MODEL, TIMINGS
from kpsim.audit.invariants import audit
from kpsim.hw.x86 import pte as e
from kpsim.machine import MachineConfig, boot

INSIDE = tuple(t for t in TIMINGS if t not in OUTSIDE_THREAT_MODEL)


def x86(**kw):
    return boot(MachineConfig(memory="256M", cpus=2, arch="x86", **kw))


def campaign(targets, timings=INSIDE, attempts=2, **machine):
    m = x86(**machine)
    cfg = AttackConfig(targets=targets, timings=timings, attempts=attempts, random_attempts=8)
    return m, run_attack(m, cfg)


def rows(report):
    return {r.cls: r for r in report.targets}


def test_blocked_fault_is_a_supervisor_pk_write_fault():
    """The kept #PF error code is 0x23 (P, W/R, PK; supervisor), read out in words."""
    _, report = campaign(("linear_pte", "kimage_pud"), timings=("rest",))
    for r in report.targets:
        doc = r.as_json()
        assert doc["blocked_pf_error_code"] == "0x23" and "blocked_esr" not in doc
        assert doc["blocked_pf"] == "supervisor write, protection key"


def test_negative_control_no_fault_is_kept():
    """Feature off: nothing is blocked, so no error code is kept (None, not a stale one)."""
    _, report = campaign(("linear_pte",), timings=("rest",), hardened_pgtables=False)
    doc = report.targets[0].as_json()
    assert doc["landed"] == doc["attempts"] and doc["blocked_pf_error_code"] is None


def test_user_pte_gain_is_a_cpl3_access_and_names_the_bits():
    """Feature off: a landed user PTE lets the victim read and write a kernel page at
    CPL 3 (a real user-mode access), and the entry change is P, RW and U/S set."""
    _, report = campaign(("user_pte",), timings=("rest",), hardened_pgtables=False)
    ex = report.targets[0].examples
    assert ex and all(x["user_read"] and x["user_write"] for x in ex)
    assert {x["checked_by"] for x in ex} == {"CPL 3 access"}
    for x in ex:
        assert x["entry_change"] == ["P set (the slot was empty)", "RW set", "U/S set"]
        value = int(x["value"], 16)
        assert value & e.US and value & e.RW and e.pkey(value) == 0


def test_kernel_gains_are_judged_with_the_attackers_pkrs():
    """Feature off: each landed kernel entry maps a text/rodata page writable at CPL 0
    under the attacker's IA32_PKRS; the entry change says how: a table pointer turned
    into a leaf (PS set), a leaf moved (its address), or the read-only alias of the
    text made writable (RW set)."""
    _, report = campaign(
        ("linear_pmd", "linear_pud", "kimage_pud"), timings=("rest",), hardened_pgtables=False
    )
    for r in report.targets:
        assert r.gains == {"writable_readonly_page": r.attempts}, r.cls
        for x in r.examples:
            assert x["what"] in ("kernel text", "kernel rodata")
            assert any(c.startswith(("PS set", "address", "RW set")) for c in x["entry_change"])


def test_kimage_alias_is_blocked_with_the_block_allocator():
    """x86 keys its static tables' image alias too (cpa_process_alias), and the PBA keys
    the split table that needs: every write through the image mapping is blocked
    (arm64 leaves that alias unkeyed: tests/attack/test_attack.py)."""
    m, report = campaign(("kimage_alias",))
    r = report.targets[0]
    assert r.extra["tables"] == 3 and r.extra["tables_unkeyed"] == 0
    assert r.blocked == r.attempts and r.landed == 0 and report.exit_status == 0
    assert audit(m) == []


def test_kimage_alias_lands_on_the_unkeyed_image_split_with_minimal():
    """Negative control of the above: with the minimal allocator on the block-mapped
    direct map (--allow-unsafe-split) the table of the image split, requested under
    cpa_lock, is left unkeyed (a recursive split); writes to it land and gain, exit 1,
    and the note says why. The audit reports the same table. (On a 4K direct map no
    cpa_lock is taken and that table is keyed: test below.)"""
    m, report = campaign(
        ("kimage_alias",), linear_map="block", allocator="minimal", allow_unsafe_split=True
    )
    r = report.targets[0]
    assert r.extra["tables_unkeyed"] == 1 and r.extra["tables_left_unprotected_by_split"] == 1
    assert 0 < r.landed < r.attempts and r.blocked == r.attempts - r.landed
    assert r.gains == {"writable_readonly_page": r.landed}
    assert all(not x["table_keyed"] for x in r.examples)
    assert report.exit_status == 1
    assert any(
        n.startswith("kimage_alias: a write to a table of the kernel image") for n in report.notes
    )
    assert any(v.invariant == "table-keyed" for v in audit(m))


def test_kimage_alias_blocked_with_minimal_on_a_4k_direct_map():
    """The minimal allocator on a 4K direct map: CPA takes no cpa_lock there (Linux skips
    it with debug_pagealloc), so the image split's table is keyed like any other and
    every kimage_alias write is blocked; the audit is clean."""
    m, report = campaign(("kimage_alias",), linear_map="pte", allocator="minimal")
    r = report.targets[0]
    assert r.extra["tables_unkeyed"] == 0 and r.landed == 0 and r.blocked == r.attempts
    assert report.exit_status == 0 and audit(m) == []


def test_random_writes_hit_tables_blocked_on_landed_off():
    """Random direct-map writes: the page-table hits are blocked with the feature on
    and land with it off; misses into the text/rodata alias take a plain permission
    fault (P without PK)."""
    big = AttackConfig(targets=("random",), timings=("rest",), random_attempts=3000)
    on = run_attack(x86(), big).targets[0]
    off = run_attack(x86(hardened_pgtables=False), big).targets[0]
    assert on.extra["hit_page_tables"] > 0 and off.extra["hit_page_tables"] > 0
    assert on.landed == 0 and on.blocked == on.extra["hit_page_tables"]
    assert off.blocked == 0 and off.landed == off.extra["hit_page_tables"]
    assert on.other_outcomes.get("permission_off_page_tables", 0) > 0
