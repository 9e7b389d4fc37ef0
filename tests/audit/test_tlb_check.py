"""The audit's TLB check, grouped by region, finds exactly the stale entries the
page-at-a-time reference walk finds, for corruptions of leaves and of table entries."""

import random

import pytest

from kpsim.audit.invariants import _check_tlbs, check_tlbs_reference
from kpsim.hw.arm64.mmu import KERNEL_VA_START
from kpsim.machine import boot
from kpsim.mm.madvise import MADV_HUGEPAGE
from kpsim.mm.process import Process

MiB = 1 << 20
#: leaf bits a corruption flips: valid, type, AP[2:1], AF, PXN, UXN, pkey, two OA bits
LEAF_BITS = (0, 1, 6, 7, 10, 53, 54, 60, 61, 62, 12, 20)
#: table-descriptor bits: valid, type, PXNTable, UXNTable, APTable[1:0]
TABLE_BITS = (0, 1, 59, 60, 61, 62)
_OTHER: list = []  # the address space that does not run at the end


def _machine(linear_map: str):
    m = boot(memory="256M", linear_map=linear_map)
    p = Process.create(m, "p")
    a = p.mmap(None, 4 * MiB)
    p.touch_range(a, 4 * MiB, stride=4096, write=True)
    h = p.mmap(None, 4 * MiB)
    p.madvise(h, 4 * MiB, MADV_HUGEPAGE)
    p.touch(h, write=True)  # a PMD block in the user half
    p.touch(h + 8192)
    q = Process.create(m, "q")  # another address space's entries stay in cpu0's TLB
    b = q.mmap(None, 2 * MiB)
    q.touch_range(b, 2 * MiB, stride=4096, write=True)
    p.touch(a)  # p runs on cpu0 again
    _OTHER[:] = [q]
    return m


def _entry_pas(m, cpu, va, asid):
    """The physical addresses of the descriptors a walk of ``va`` reads, top first (in
    the address space of ``asid``, the running one's when None)."""
    root = cpu.ttbr1 if va >= KERNEL_VA_START else cpu.ttbr0
    if va < KERNEL_VA_START and asid is not None and asid != cpu.asid:
        root = _OTHER[0].mm.pgd_pa  # q, the only other address space
    pa, out = root, []
    for shift in (39, 30, 21, 12):
        entry = pa + (((va >> shift) & 0x1FF) << 3)
        out.append(entry)
        desc = m.mem.read64(entry)
        if shift == 12 or desc & 3 != 3:
            break
        pa = desc & ((1 << 48) - 1) & ~0xFFF
    return out


@pytest.mark.parametrize("linear_map", ["pte", "block"])
def test_grouped_tlb_check_equals_the_reference_walk(linear_map):
    """Random one-bit corruptions of a cached entry's leaf or of a table entry above it:
    the grouped check reports the same violations as the reference, in the same order;
    the clean machine reports none (negative control: plants are found)."""
    m = _machine(linear_map)
    assert _check_tlbs(m) == check_tlbs_reference(m) == []
    rng = random.Random(1405)
    cached = [(cpu, va, asid) for cpu in m.hw.cpus for va, asid, _ in cpu.tlb.cached()]
    assert len(cached) > 1000
    assert any(asid is not None and asid != cpu.asid for cpu, _, asid in cached)
    found = 0
    for trial in range(200):
        cpu, va, asid = rng.choice(cached)
        pas = _entry_pas(m, cpu, va, asid)
        if trial % 3 == 0 and len(pas) > 1:  # a table entry above the leaf
            where = rng.choice(pas[:-1])
            bit = rng.choice(TABLE_BITS)
        else:
            where, bit = pas[-1], rng.choice(LEAF_BITS)
        old = m.mem.read64(where)
        m.mem.write64(where, old ^ (1 << bit))
        try:
            ref = check_tlbs_reference(m)
            assert _check_tlbs(m) == ref
            found += bool(ref)
        finally:
            m.mem.write64(where, old)
    assert found > 50  # most flips make some entry stale
    assert _check_tlbs(m) == []
