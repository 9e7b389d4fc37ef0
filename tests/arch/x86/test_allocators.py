"""The kpkeys table allocators on x86 (seed minimal, v6 PBA, Edgecombe's grouped pages
and the boot-time split reserve): every table page is keyed in the direct map (and
the image alias for the static ones), checked on the tables in RAM; the negative
control is the feature off, where no table page carries key 1."""

from __future__ import annotations

import pytest

from kpsim.arch.x86.memory import START_KERNEL_MAP
from kpsim.hw.x86 import pte as e
from kpsim.kpkeys.reserve import reserve_pages_needed
from kpsim.machine.boot import Machine
from kpsim.mm.process import Process, mm_context


def key_of(m: Machine, va: int) -> int:
    found = m.arch.lookup_address(va)
    assert found is not None, hex(va)
    return e.pkey(m.arch.read_entry(found[0]))


def unkeyed_tables(m: Machine) -> list[int]:
    """Live table pages whose direct-map leaf does not carry key 1 (or, for the image's
    static tables, whose image alias does not)."""
    bad = [pfn for pfn in m.k.pgtable.live if key_of(m, m.arch.page_to_virt(pfn)) != 1]
    bad += [pa >> 12 for pa in m.arch.static_tables if key_of(m, START_KERNEL_MAP + pa) != 1]
    return bad


def exercise(m: Machine) -> None:
    """Some user page tables, a fork, and vmalloc-style splits of the direct map."""
    p = Process.create(mm_context(m.k, m.arch), cpu=0)
    addr = p.mmap(None, 4 << 20)
    p.touch_range(addr, 4 << 20, write=True)
    child = p.fork(cpu=1)
    child.touch(addr, write=True)
    assert m.arch.set_memory_ro(m.arch.page_to_virt((1 << 17) + 7), 1) == 0  # a split


@pytest.mark.parametrize(
    ("linear_map", "allocator"),
    [("pte", "minimal"), ("block", "pba"), ("block", "reserve"), ("pte", "grouped")],
)
def test_every_table_page_is_keyed(linear_map: str, allocator: str) -> None:
    m = Machine.boot(arch="x86", memory="1G", linear_map=linear_map, allocator=allocator)
    exercise(m)
    bad = unkeyed_tables(m)
    if allocator in ("minimal", "grouped"):
        # the image alias split of the static tables' keying: the recursion (fidelity.md)
        unprotected = m.kpkeys.unprotected if m.kpkeys is not None else set()
        assert set(bad) <= unprotected and len(unprotected) <= 1
    else:
        assert bad == []


def test_control_feature_off_keys_nothing() -> None:
    m = Machine.boot(arch="x86", memory="1G", hardened_pgtables=False)
    exercise(m)
    assert all(key_of(m, m.arch.page_to_virt(pfn)) == 0 for pfn in m.k.pgtable.live)


def test_grouped_pages_on_a_block_map_leave_split_tables_unprotected() -> None:
    """Edgecombe's cache without the reserve: keying a refilled 2M block may split
    the direct map, and that split's table cannot come from the (empty) cache."""
    m = Machine.boot(
        arch="x86", memory="1G", linear_map="block", allocator="grouped", allow_unsafe_split=True
    )
    exercise(m)
    assert m.kpkeys is not None and m.kpkeys.unprotected
    assert set(unkeyed_tables(m)) <= m.kpkeys.unprotected


def test_reserve_is_sized_to_split_the_whole_direct_map() -> None:
    """One page per GiB plus one per 2 MiB, taken in 2 MiB blocks at boot."""
    m = Machine.boot(arch="x86", memory="2G", linear_map="block", allocator="reserve")
    need = 2 + 1024
    assert reserve_pages_needed(m.config.memory) == need
    assert m.kpkeys is not None
    assert m.kpkeys.reserve_size == -(-need // 512) * 512
