"""map_mem maps memory a GiB at a time (for boot's progress): the page tables, their
allocation order and the counters are those of one __map_memblock call per range."""

from __future__ import annotations

import hashlib

import pytest

from kpsim.arch.arm64 import setup
from kpsim.arch.arm64.mmu import NO_CONT_MAPPINGS
from kpsim.arch.arm64.pgtable import PAGE_KERNEL, pgprot_tagged
from kpsim.machine import Machine
from kpsim.machine.config import MachineConfig


def _one_call_map_mem(self, early_alloc, progress=None):  # type: ignore[no-untyped-def]
    """map_mem as one call per range (what Linux's map_mem does)."""
    k_start = self.kimage_pa
    k_end = self.kimage_pa + setup.INIT_BEGIN_OFFSET
    for base, size in self.k.memblock.memory_regions():
        end = base + size
        for lo, hi in ((base, min(end, k_start)), (max(base, k_end), end)):
            if lo < hi:
                self._map_memblock(
                    lo, hi, pgprot_tagged(PAGE_KERNEL), self.linear_map_flags(), early_alloc
                )
    self._map_memblock(k_start, k_end, PAGE_KERNEL, NO_CONT_MAPPINGS, early_alloc)


def _digest(m: Machine) -> tuple[str, dict[str, int]]:
    h = hashlib.sha256()
    for pfn in sorted(m.k.pgtable.live):  # every table page, in pfn order, and its bits
        h.update(pfn.to_bytes(8, "little"))
        h.update(m.mem.frame_ro(pfn).tobytes())
    return h.hexdigest(), dict(m.counters)


@pytest.mark.parametrize(
    "kw",
    [
        {"memory": "3G"},
        {"memory": "3G", "linear_map": "block"},
        {"memory": "5G", "linear_map": "block", "allocator": "pba"},
        {"memory": "2G", "linear_map": "block", "allocator": "minimal", "allow_unsafe_split": True},
        {"memory": "2G", "dram_base": 0x8000_0000 + 0x20_0000},  # not GiB-aligned
    ],
)
def test_chunked_map_mem_equals_one_call(monkeypatch: pytest.MonkeyPatch, kw: dict) -> None:  # type: ignore[type-arg]
    """Same table pages with the same bits, same counters, on PTE and block maps."""
    chunked = _digest(Machine.boot(MachineConfig(**kw)))
    monkeypatch.setattr(setup.SetupMixin, "map_mem", _one_call_map_mem)
    assert _digest(Machine.boot(MachineConfig(**kw))) == chunked
