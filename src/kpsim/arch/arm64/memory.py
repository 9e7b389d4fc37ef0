"""The arm64 kernel virtual address layout for 48-bit VA and 4 KiB pages.

Models ``arch/arm64/include/asm/memory.h`` (Linux 6.x, after the 52-bit VA rework):

=====================  ======================  =====================================
region                 start                   notes
=====================  ======================  =====================================
linear map             0xffff000000000000      PAGE_OFFSET; covers up to 128 TiB
(end of linear map)    0xffff800000000000      PAGE_END
modules                0xffff800000000000      MODULES_VADDR, 2 GiB
kernel image           0xffff800080000000      KIMAGE_VADDR (inside vmalloc space)
vmalloc                0xffff800080000000      VMALLOC_START
(end of vmalloc)       0xfffffdffb0000000      VMALLOC_END = VMEMMAP_START - 256 MiB
vmemmap                0xfffffdffc0000000      VMEMMAP_START, 2 TiB of struct page
(end of vmemmap)       0xffffffffc0000000      VMEMMAP_END
PCI I/O                0xffffffffc0800000      16 MiB
fixmap                 0xffffffffff800000      FIXADDR_TOP - 8 MiB .. FIXADDR_TOP
=====================  ======================  =====================================

The linear map is ``va = PAGE_OFFSET + (pa - memstart_addr)`` with ``memstart_addr``
the DRAM base rounded down to ARM64_MEMSTART_ALIGN (1 GiB with 4 KiB pages). KASLR
is off (no randomised offsets). ``struct page`` is 64 bytes.
"""

from __future__ import annotations

from kpsim.units import SZ_1G, SZ_2M, PhysAddr, VirtAddr

VA_BITS = 48
PAGE_OFFSET = (1 << 64) - (1 << VA_BITS)
PAGE_END = (1 << 64) - (1 << (VA_BITS - 1))
MODULES_VADDR = PAGE_END
MODULES_VSIZE = 2 * SZ_1G
MODULES_END = MODULES_VADDR + MODULES_VSIZE
KIMAGE_VADDR = MODULES_END
STRUCT_PAGE_SIZE = 64
VMEMMAP_END = (1 << 64) - SZ_1G
VMEMMAP_SIZE = ((PAGE_END - PAGE_OFFSET) >> 12) * STRUCT_PAGE_SIZE
VMEMMAP_START = VMEMMAP_END - VMEMMAP_SIZE
VMALLOC_START = MODULES_END
VMALLOC_END = VMEMMAP_START - 256 * (1 << 20)
PCI_IO_START = VMEMMAP_END + 8 * (1 << 20)
PCI_IO_END = PCI_IO_START + 16 * (1 << 20)
FIXADDR_TOP = (1 << 64) - 8 * (1 << 20)
FIXADDR_START = FIXADDR_TOP - 8 * (1 << 20)
ARM64_MEMSTART_ALIGN = SZ_1G
KERNEL_IMAGE_ALIGN = SZ_2M

REGIONS: dict[str, tuple[int, int]] = {
    "linear": (PAGE_OFFSET, PAGE_END),
    "modules": (MODULES_VADDR, MODULES_END),
    "vmalloc": (VMALLOC_START, VMALLOC_END),
    "vmemmap": (VMEMMAP_START, VMEMMAP_END),
    "pci": (PCI_IO_START, PCI_IO_END),
    "fixmap": (FIXADDR_START, FIXADDR_TOP),
}


class Layout:
    """Address conversions for one machine (they depend on the DRAM base)."""

    __slots__ = ("memstart_addr", "vmemmap_base")

    def __init__(self, dram_base: int) -> None:
        self.memstart_addr = dram_base & ~(ARM64_MEMSTART_ALIGN - 1)
        self.vmemmap_base = VMEMMAP_START - (self.memstart_addr >> 12) * STRUCT_PAGE_SIZE

    def phys_to_virt(self, pa: int) -> VirtAddr:
        """``__phys_to_virt``: the linear-map alias of a physical address."""
        return VirtAddr(PAGE_OFFSET + (pa - self.memstart_addr))

    def virt_to_phys(self, va: int) -> PhysAddr:
        """``__virt_to_phys`` for a linear-map address."""
        return PhysAddr(va - PAGE_OFFSET + self.memstart_addr)

    def pfn_to_virt(self, pfn: int) -> VirtAddr:
        return self.phys_to_virt(pfn << 12)

    def is_linear(self, va: int) -> bool:
        """``__is_lm_address``."""
        return PAGE_OFFSET <= va < PAGE_END

    def page_to_virt_struct(self, pfn: int) -> VirtAddr:
        """Address of ``struct page`` for ``pfn`` in the vmemmap (``pfn_to_page``)."""
        return VirtAddr(self.vmemmap_base + pfn * STRUCT_PAGE_SIZE)


def region_of(va: int) -> str | None:
    for name, (lo, hi) in REGIONS.items():
        if lo <= va < hi:
            return name
    return None
