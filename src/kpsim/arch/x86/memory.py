"""The x86-64 kernel virtual address layout with 4-level paging and 4 KiB pages.

Models ``Documentation/arch/x86/x86_64/mm.rst`` and ``arch/x86/include/asm/page_64_types.h``,
``pgtable_64_types.h`` with KASLR off (no randomised bases):

=====================  ======================  =====================================
region                 start                   notes
=====================  ======================  =====================================
user space             0x0000000000000000      TASK_SIZE_MAX 0x00007ffffffff000
direct map             0xffff888000000000      PAGE_OFFSET (__PAGE_OFFSET_BASE_L4),
                                               64 TiB
vmalloc/ioremap        0xffffc90000000000      VMALLOC_START, 32 TiB
vmemmap                0xffffea0000000000      VMEMMAP_START, 1 TiB
kernel text mapping    0xffffffff80000000      __START_KERNEL_map, 512 MiB
modules                0xffffffffa0000000      MODULES_VADDR
=====================  ======================  =====================================

The direct map is ``va = PAGE_OFFSET + pa`` (x86's physical memory starts at 0); the
kernel image is at ``__START_KERNEL_map + pa`` too (``__phys_addr_symbol``), loaded at
``CONFIG_PHYSICAL_START`` = 16 MiB.
"""

from __future__ import annotations

from kpsim.units import SZ_1G

VA_BITS = 48
PAGE_OFFSET = 0xFFFF_8880_0000_0000
DIRECT_MAP_SIZE = 64 << 40
PAGE_END = PAGE_OFFSET + DIRECT_MAP_SIZE
VMALLOC_START = 0xFFFF_C900_0000_0000
VMALLOC_SIZE = 32 << 40
VMALLOC_END = VMALLOC_START + VMALLOC_SIZE - 1  # inclusive, as Linux defines it
VMEMMAP_START = 0xFFFF_EA00_0000_0000
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map
KERNEL_IMAGE_SIZE = 512 << 20
MODULES_VADDR = START_KERNEL_MAP + KERNEL_IMAGE_SIZE
MODULES_END = 0xFFFF_FFFF_FF00_0000
PHYSICAL_START = 16 << 20  # CONFIG_PHYSICAL_START
TASK_SIZE_MAX = (1 << 47) - 4096
STRUCT_PAGE_SIZE = 64
ISA_END_ADDRESS = 0x10_0000
MAX_DIRECT_MAP = DIRECT_MAP_SIZE
SZ_512G = 512 * SZ_1G

REGIONS: dict[str, tuple[int, int]] = {
    "direct": (PAGE_OFFSET, PAGE_END),
    "vmalloc": (VMALLOC_START, VMALLOC_END + 1),
    "vmemmap": (VMEMMAP_START, VMEMMAP_START + (1 << 40)),
    "kernel": (START_KERNEL_MAP, MODULES_VADDR),
    "modules": (MODULES_VADDR, MODULES_END),
}


class Layout:
    """Address conversions (x86's are fixed: no DRAM-base offset)."""

    __slots__ = ("memstart_addr",)

    def __init__(self) -> None:
        self.memstart_addr = 0

    @staticmethod
    def phys_to_virt(pa: int) -> int:
        """``__va``: the direct-map alias of a physical address."""
        return PAGE_OFFSET + pa

    @staticmethod
    def virt_to_phys(va: int) -> int:
        """``__pa`` for a direct-map or kernel-image address (``__phys_addr``)."""
        if va >= START_KERNEL_MAP:
            return va - START_KERNEL_MAP
        return va - PAGE_OFFSET

    def pfn_to_virt(self, pfn: int) -> int:
        return PAGE_OFFSET + (pfn << 12)

    @staticmethod
    def is_linear(va: int) -> bool:
        """In the direct map (``virt_addr_valid`` without the pfn check)."""
        return PAGE_OFFSET <= va < PAGE_END

    @staticmethod
    def page_to_virt_struct(pfn: int) -> int:
        """``pfn_to_page`` in the vmemmap."""
        return VMEMMAP_START + pfn * STRUCT_PAGE_SIZE


def region_of(va: int) -> str | None:
    for name, (lo, hi) in REGIONS.items():
        if lo <= va < hi:
            return name
    return None
