"""The built-in mixed workload: what it exercises, determinism, and its interrupts."""

from kpsim.audit.invariants import audit
from kpsim.machine import boot
from kpsim.workloads.mixed import mixed_workload


def run(**kw):
    m = boot(memory="256M", cpus=kw.pop("cpus", 2), **kw)
    phases = []
    res = mixed_workload(m, seed=5, check=lambda ph: phases.append((ph, audit(m))))
    return m, res, phases


def test_exercises_every_kind_of_table_lifetime_and_ends_clean():
    m, res, phases = run(cpus=3)
    c = m.counters
    for op in ("fork", "exec", "exit", "vmalloc", "vfree", "vm_map_ram", "vmalloc_huge"):
        assert res.ops[op] > 0, op
    assert c["thp_fault_alloc"] >= 3 and c["fault_permission"] > 0  # THPs and COW
    assert c["context_switches"] > 10 and c["pgtable_free"] > 50
    assert [ph for ph, _ in phases] == ["faults", "fork", "syscalls", "vmalloc", "exit"]
    assert all(found == [] for _, found in phases)  # the audit at every phase boundary
    # every process exited: only kernel tables are left, and the machine is clean
    assert {info.owner for info in m.k.pgtable.live.values()} == {"kernel"}
    assert audit(m) == []
    assert m.arch.irq_hook is None


def test_same_seed_same_run():
    m1, r1, _ = run()
    m2, r2, _ = run()
    assert r1.as_dict() == r2.as_dict()
    assert m1.counters == m2.counters


def test_interrupts_hit_batched_sections_and_keep_the_register_right():
    _, res, _ = run()
    assert len(res.irqs) >= 4 and len({r.cpu for r in res.irqs}) == 2
    for r in res.irqs:
        assert r.in_lazy_section
        assert r.por_before == 0x57  # batched: the section runs in the page-table context
        assert r.por_in_handler == 0x17  # entry reset the register to the default
        assert r.por_after_return == 0x57  # the return path gave the section its value
        assert r.por_at_section_end == 0x17


def test_interrupts_without_batching_see_the_default_context_throughout():
    """Control: without batching the interrupted section never holds the privileged value."""
    _, res, _ = run(batching=False)
    assert res.irqs
    assert {(r.por_before, r.por_in_handler, r.por_after_return) for r in res.irqs} == {
        (0x17, 0x17, 0x17)
    }


def test_runs_without_poe_and_with_the_feature_off():
    for kw in ({"poe": False}, {"hardened_pgtables": False}):
        m, res, phases = run(**kw)
        assert res.ops["fork"] and all(found == [] for _, found in phases)
        assert m.counters["set_memory_pkey"] == 0 and m.counters["kpkeys_guard_entries"] == 0
