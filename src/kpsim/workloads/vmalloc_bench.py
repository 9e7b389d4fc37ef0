"""test_vmalloc.ko's tests (lib/test_vmalloc.c), as used by the series (spec §7.1).

Each test is a loop of ``loops`` (``test_loop_count``) iterations on CPU 0, all timed:

- ``vmalloc.fix_size_alloc`` (``fix_size_alloc_test``): ``vmalloc(pages * PAGE_SIZE)``
  (``vmalloc_huge`` with ``huge``) then ``vfree``: ``__vmalloc_node_range`` ->
  ``alloc_vmap_area``, ``vm_area_alloc_pages`` (one buddy allocation per page),
  ``vmap_pages_range`` (tables via ``pte_alloc_kernel``, one lazy-MMU section per PTE
  table); ``vfree`` -> ``vunmap_range_noflush`` (one lazy-MMU section), pages freed,
  the area queued for the lazy purge (``__purge_vmap_area_lazy``: one kernel-range TLB
  flush once ``lazy_max_pages()`` are waiting). With ``huge`` and 16 pages or more
  (``arch_vmap_pte_supported_shift``: 64 KiB on arm64) the area is 64 KiB aligned, the
  pages come as order-4 blocks (``split_page``d, freed one by one by ``vfree``) and each
  64 KiB is mapped by its own ``vmap_range_noflush`` (own walk, own lazy-MMU section)
  as 16 contiguous PTEs (``set_huge_pte_at``); below 16 pages ``huge`` changes nothing.
- ``vmalloc.random_size_alloc`` (``random_size_alloc_test``): the same with a size of
  1..``max_pages`` pages drawn per iteration (the module's ``nr_pages`` is unused by
  this test in Linux too; the published "p:1" label names the module parameter).
- ``vmalloc.vm_map_ram`` (``vm_map_ram_test``): ``pages`` pages are allocated once,
  untimed; each iteration maps them with ``vm_map_ram`` and unmaps with
  ``vm_unmap_ram``.

Departures (docs/fidelity.md): the test's one-byte store through the new mapping is not
made; ``vm_map_ram`` of a few pages
gets a vmap area of its own instead of a slot of a per-CPU ``vmap_block``
(kpsim.mm.vmalloc). The counters ``vmalloc``, ``vfree``, ``vm_map_ram`` and
``vm_unmap_ram`` (calls) and ``vmalloc_page`` are counted by kpsim.mm.vmalloc.
"""

from __future__ import annotations

import random
from typing import Any

from kpsim.errors import OutOfMemory
from kpsim.machine.boot import Machine
from kpsim.mm import vmalloc as vm
from kpsim.mm.gfp import GFP_KERNEL
from kpsim.workloads.base import ParamSpec, WorkloadDef, measured

PAGE_SIZE = 4096
_LOOPS = ParamSpec("loops", "int", 200, min=1, max=1_000_000, doc="test_loop_count")


def _alloc_free(m: Machine, size: int, huge: bool) -> None:
    addr = vm.vmalloc(m.k, size, huge=huge)
    if not addr:
        raise OutOfMemory(f"vmalloc({size:#x})")
    vm.vfree(m.k, addr)


def run_fix_size(m: Machine, params: dict[str, Any], rng: random.Random) -> None:
    size, huge = int(params["pages"]) * PAGE_SIZE, bool(params["huge"])
    with m.arch.on_cpu(0), measured(m):
        for _ in range(int(params["loops"])):
            _alloc_free(m, size, huge)


def run_random_size(m: Machine, params: dict[str, Any], rng: random.Random) -> None:
    top = int(params["max_pages"])
    with m.arch.on_cpu(0), measured(m):
        for _ in range(int(params["loops"])):
            _alloc_free(m, rng.randint(1, top) * PAGE_SIZE, False)


def run_vm_map_ram(m: Machine, params: dict[str, Any], rng: random.Random) -> None:
    nr = int(params["pages"])
    pa = m.k.page_alloc
    pfns: list[int] = []
    with m.arch.on_cpu(0):
        for _ in range(nr):  # alloc_pages_bulk, untimed
            pfn = pa.alloc_pages(GFP_KERNEL, 0, owner="test_vmalloc")
            if pfn is None:
                raise OutOfMemory("vm_map_ram_test pages")
            pfns.append(int(pfn))
        with measured(m):
            for _ in range(int(params["loops"])):
                addr = vm.vm_map_ram(m.k, pfns)
                if not addr:
                    raise OutOfMemory(f"vm_map_ram({nr})")
                vm.vm_unmap_ram(m.k, addr, nr)
        for pfn in pfns:
            pa.free_pages(pfn, 0)


DEFS = (
    WorkloadDef(
        "vmalloc.fix_size_alloc",
        "test_vmalloc fix_size_alloc_test: vmalloc() then vfree() of `pages` pages",
        (
            ParamSpec("pages", "choice", 1, choices=(1, 4, 16, 64, 256), doc="nr_pages"),
            ParamSpec("huge", "bool", False, doc="use_huge: vmalloc_huge()"),
            _LOOPS,
        ),
        run_fix_size,
    ),
    WorkloadDef(
        "vmalloc.random_size_alloc",
        "test_vmalloc random_size_alloc_test: vmalloc() then vfree() of 1..max_pages pages",
        (ParamSpec("max_pages", "int", 100, min=1, max=4096, doc="largest size in pages"), _LOOPS),
        run_random_size,
    ),
    WorkloadDef(
        "vmalloc.vm_map_ram",
        "test_vmalloc vm_map_ram_test: vm_map_ram() then vm_unmap_ram() of `pages` pages",
        (ParamSpec("pages", "int", 1, min=1, max=4096, doc="nr_pages"), _LOOPS),
        run_vm_map_ram,
    ),
)
