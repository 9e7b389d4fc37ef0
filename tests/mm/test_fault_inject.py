"""Fault injection (kpsim.mm.fault_inject): should_fail(), each site's failure path, and
that random injection leaves the audit clean and every page accounted for."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpsim.audit.freewatch import FreeWatch
from kpsim.audit.invariants import audit
from kpsim.errors import ConfigError, VmFaultOom
from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.mm import mmap as mm_
from kpsim.mm.fault_inject import FaultAttr, parse_fault_spec
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL, Gfp
from kpsim.mm.mm_types import SyscallError
from kpsim.mm.process import Process, mm_context
from kpsim.workloads.soak import soak

RW = mm_.PROT_READ | mm_.PROT_WRITE
ANON = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS
POLICIES = [
    ("pte", "minimal"),
    ("pte", "pba"),
    ("pte", "grouped"),
    ("pte", "reserve"),
    ("block", "pba"),
    ("block", "reserve"),
]


def boot(linear_map: str = "pte", allocator: str | None = None, **fail: str) -> Machine:
    cfg = MachineConfig(memory="512M", linear_map=linear_map, allocator=allocator, **fail)
    return Machine.boot(cfg)


def attr(text: str, site: str = "page_alloc", seed: int = 0) -> FaultAttr:
    return FaultAttr.make(parse_fault_spec(site, text), seed)


# -- should_fail ---------------------------------------------------------------------------
def test_boot_syntax_is_interval_probability_space_times() -> None:
    """ "1,10,0,-1" is setup_fault_attr()'s order: interval, probability, space, times."""
    s = parse_fault_spec("page_alloc", "3,10,7,-1")
    assert (s.interval, s.probability, s.space, s.times) == (3, 10, 7, -1)


def test_interval_fails_every_nth_call_and_times_bounds_the_total() -> None:
    """probability 100, interval 3, times 2: calls 3 and 6 fail, then none."""
    a = attr("interval=3,times=2")
    got = [a.should_fail() for _ in range(12)]
    assert [i + 1 for i, f in enumerate(got) if f] == [3, 6]
    assert a.injected == 2 and a.times == 0


def test_space_is_consumed_before_any_failure() -> None:
    """space=10: sizes are subtracted until what is left is no more than the size."""
    a = attr("space=10,times=-1")
    assert [a.should_fail(4) for _ in range(4)] == [False, False, True, True]


def test_probability_zero_never_fails_and_draws_are_seeded() -> None:
    """probability 0 never fails; the same seed gives the same failures, another seed others."""
    assert not any(attr("probability=0,times=-1").should_fail() for _ in range(1000))
    one = [attr("probability=30,times=-1", seed=1).should_fail() for _ in range(1)]
    a, b, c = (attr("probability=30,times=-1", seed=s) for s in (1, 1, 2))
    ra = [a.should_fail() for _ in range(200)]
    assert ra == [b.should_fail() for _ in range(200)] and one == ra[:1]
    assert ra != [c.should_fail() for _ in range(200)]
    assert 30 < sum(ra) < 90  # about 30 %


@pytest.mark.parametrize(
    "text",
    ["", "1,2,3", "1,x,0,1", "probability=101", "interval=0", "times=-2", "bogus=1", "unkey=1",
     "probability=5,probability=6", "verbose=3", "min_order=11"],
)  # fmt: skip
def test_bad_specs_are_config_errors(text: str) -> None:
    """Each malformed or impossible spec is refused with a ConfigError naming the site."""
    with pytest.raises(ConfigError, match="fail_page_alloc"):
        parse_fault_spec("page_alloc", text)


# -- the page allocator ----------------------------------------------------------------------
def test_page_alloc_fails_when_injected_and_not_otherwise() -> None:
    """An injected alloc_pages() returns None and counts; without injection it succeeds."""
    m = boot(fail_page_alloc="times=1")
    pa = m.k.page_alloc
    free = pa.nr_free
    assert pa.alloc_pages(GFP_KERNEL) is None
    assert pa.counters["alloc_fail_injected"] == 1 and pa.nr_free == free
    assert pa.alloc_pages(GFP_KERNEL) is not None  # times exhausted
    assert boot().k.page_alloc.alloc_pages(GFP_KERNEL) is not None  # control


def test_nofail_and_min_order_are_never_injected() -> None:
    """should_fail_alloc_page() skips __GFP_NOFAIL and orders below min_order."""
    m = boot(fail_page_alloc="min_order=1,times=-1")
    pa = m.k.page_alloc
    assert pa.alloc_pages(GFP_KERNEL, 0) is not None
    assert pa.alloc_pages(GFP_KERNEL | Gfp.NOFAIL, 2) is not None
    assert pa.alloc_pages(GFP_KERNEL, 1) is None


# -- kpkeys: the seed's failure paths ----------------------------------------------------------
def test_keying_failure_frees_the_page_and_returns_null() -> None:
    """set_memory_pkey fails in kpkeys_pgtable_alloc: WARN, the page goes back, NULL."""
    m = boot(fail_set_memory_pkey="times=1")
    pa = m.k.page_alloc
    free, warns = pa.nr_free, len(m.k.warnings)
    assert m.k.pgtable.pagetable_alloc(GFP_PGTABLE_KERNEL) is None
    assert pa.nr_free == free and len(m.k.warnings) == warns + 1
    assert "kpkeys_pgtable_alloc" in m.k.warnings[-1].function
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")  # control: the next works
    assert pfn is not None
    m.k.pgtable.free_table(pfn)
    assert audit(m) == []


def test_unkeying_failure_warns_and_frees_anyway() -> None:
    """unkey=1: set_memory_pkey(DEFAULT) fails on the free path; the seed WARNs and frees
    the page still keyed, which the free watch reports. Control: unkey=0 (the default)
    leaves the free path alone and the watch is quiet."""
    for unkey, expect in ((1, True), (0, False)):
        m = boot(fail_set_memory_pkey=f"unkey={unkey},times=-1,space=1")
        m.k.fault_inject.get("set_memory_pkey").suspended = True
        pfn = m.k.pgtable.pagetable_alloc(GFP_PGTABLE_KERNEL)
        m.k.fault_inject.get("set_memory_pkey").suspended = False
        with FreeWatch(m) as watch:
            m.k.pgtable.pagetable_free(pfn)
        assert bool(watch.violations) is expect
        assert any("kpkeys_pgtable_free" in w.function for w in m.k.warnings) is expect
        assert m.k.page_alloc.is_free(pfn)  # freed either way


# -- user operations: -ENOMEM reaches them ---------------------------------------------------
def _proc(m: Machine) -> Process:
    mm_context(m.k, m.arch)
    return Process.create(m, stack=False)


def test_a_fault_that_cannot_get_a_page_is_vm_fault_oom() -> None:
    """The fault's table or page allocation fails: VmFaultOom, recorded; retried, it works."""
    m = boot(fail_pagetable_alloc="space=2,times=1")  # the PGD gets through, then a table
    p = _proc(m)
    addr = p.mmap(None, 1 << 20, RW, ANON)
    with pytest.raises(VmFaultOom):
        p.touch(addr, write=True)
    assert p.oom and p.oom[0][0] == "fault" and m.k.counters["fault_enomem"] == 1
    p.touch(addr, write=True)  # times=1: the retry succeeds
    assert p.read_byte(addr) == 0xA5
    assert audit(m) == []


def test_fork_fails_with_enomem_and_leaves_nothing_behind() -> None:
    """A copy_page_range that runs out of memory: -ENOMEM, no child, every page back."""
    m = boot()
    p = _proc(m)
    addr = p.mmap(None, 8 << 20, RW, ANON)
    p.touch_range(addr, 8 << 20, write=True)
    free = m.k.page_alloc.nr_free
    ok = p.fork()  # control: a fork without injection works
    ok.exit()
    assert m.k.page_alloc.nr_free == free
    m.config = MachineConfig(memory="512M", fail_pagetable_alloc="space=3,times=1")
    m.arm_fault_injection()
    with pytest.raises(SyscallError) as err:
        p.fork()
    assert err.value.errno == 12 and m.k.counters["fork_enomem"] == 1
    assert m.k.page_alloc.nr_free == free
    assert audit(m) == []
    assert p.read_byte(addr) == 0xA5


def test_mremap_that_fails_moves_everything_back() -> None:
    """move_page_tables runs out of memory: -ENOMEM, the old mapping and its data stay."""
    m = boot()
    p = _proc(m)
    addr = p.mmap(None, 4 << 20, RW, ANON)
    p.touch_range(addr, 4 << 20, write=True)
    m.config = MachineConfig(memory="512M", fail_pagetable_alloc="space=2,times=1")
    m.arm_fault_injection()
    free = m.k.page_alloc.nr_free
    with pytest.raises(SyscallError) as err:
        p.mremap(addr, 4 << 20, 4 << 20, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 1 << 40)
    assert err.value.errno == 12
    assert m.k.page_alloc.nr_free == free
    assert p.read_byte(addr + (3 << 20)) == 0xA5 and audit(m) == []
    left = p.mm.find_vma(1 << 40)
    assert left is None or left.start > 1 << 40  # the new VMA is gone


# -- splits and refills ----------------------------------------------------------------------
def test_split_failure_makes_set_memory_fail_and_changes_nothing() -> None:
    """On a block-mapped linear map an injected split fails set_memory_ro with -ENOMEM."""
    for fail, want in (("times=-1", -12), (None, 0)):  # control: no injection, it works
        m = boot("block", "pba", fail_split=fail) if fail else boot("block", "pba")
        pfn = m.k.page_alloc.start_pfn + 1  # inside a block mapping (the first 2M)
        va = m.arch.layout.pfn_to_virt(pfn)
        assert m.arch.set_memory_ro(va, 1) == want
        assert m.arch.set_memory_rw(va, 1) == want
        assert audit(m) == []


def test_refill_failure_makes_the_table_allocation_fail() -> None:
    """With the PBA cache at its reserve, an injected refill gives NULL; control works."""
    m = boot("block", "pba", fail_pba_refill="times=-1")
    got = []
    while True:
        pfn = m.k.pgtable.pagetable_alloc(GFP_PGTABLE_KERNEL)
        if pfn is None:
            break
        got.append(pfn)
    assert m.k.fault_inject.get("pba_refill").injected >= 1
    for pfn in got:
        m.k.pgtable.pagetable_free(pfn)
    assert audit(m) == []
    control = boot("block", "pba")
    for _ in range(len(got) + 1):
        assert control.k.pgtable.pagetable_alloc(GFP_PGTABLE_KERNEL) is not None


# -- random injection everywhere: a short seeded soak -------------------------------------------
SPEC = "probability=5,times=-1"
ALL = {f"fail_{s}": SPEC for s in ("page_alloc", "pagetable_alloc", "set_memory_pkey",
                                     "split", "pba_refill")}  # fmt: skip


@pytest.mark.parametrize(("linear_map", "allocator"), POLICIES)
def test_soak_with_injection_is_clean_on_every_policy(linear_map: str, allocator: str) -> None:
    """400 random operations with 5 % failures everywhere: failures were injected and
    survived, every audit is clean, no page is lost after teardown."""
    m = boot(linear_map, allocator, **ALL)
    found: list[object] = []
    res = soak(m, 400, seed=3, audit_every=100, check=lambda ph: found.extend(audit(m)))
    assert m.k.fault_inject.injected > 10 and sum(res.enomem.values()) > 0
    assert found == [] and res.balance["lost"] == 0


def test_soak_without_injection_meets_no_enomem_negative_control() -> None:
    """The same soak with injection off: no -ENOMEM at all, clean, balanced."""
    m = boot()
    found: list[object] = []
    res = soak(m, 400, seed=3, audit_every=100, check=lambda ph: found.extend(audit(m)))
    assert res.enomem == {} and found == [] and res.balance["lost"] == 0


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    policy=st.sampled_from(POLICIES),
    seed=st.integers(0, 2**16),
    probability=st.integers(1, 40),
    interval=st.integers(1, 4),
    sites=st.sets(st.sampled_from(sorted(ALL)), min_size=1),
)
def test_random_injection_keeps_the_audit_clean_and_pages_balanced(
    policy: tuple[str, str], seed: int, probability: int, interval: int, sites: set[str]
) -> None:
    """Property: any spec on any subset of sites, any seed: audit clean, no page lost."""
    spec = f"probability={probability},interval={interval},times=-1"
    cfg = MachineConfig(memory="512M", linear_map=policy[0], allocator=policy[1], seed=seed,
                        **dict.fromkeys(sites, spec))  # fmt: skip
    m = Machine.boot(cfg)
    found: list[object] = []
    res = soak(m, 150, seed=random.Random(seed).randrange(1 << 30), audit_every=50,
               check=lambda ph: found.extend(audit(m)))  # fmt: skip
    assert found == [] and res.balance["lost"] == 0
