"""The arch hooks generic mm code calls (the Python form of ``asm/pgtable.h``,
``asm/tlbflush.h`` and the lazy-MMU hooks): a Protocol so that ``kpsim.mm`` never names
an architecture (DESIGN.md, Architecture)."""

from __future__ import annotations

from typing import Any, Protocol


class ArchOps(Protocol):
    """What generic mm code needs from the architecture."""

    def page_to_virt(self, pfn: int) -> int:
        """Linear-map address of a page frame (``page_address``)."""
        ...

    def clear_page(self, pfn: int) -> None:
        """Zero a page through its linear-map alias (``clear_page``)."""
        ...

    def arch_enter_lazy_mmu_mode(self) -> None: ...

    def arch_leave_lazy_mmu_mode(self) -> None: ...

    def current(self) -> Any:
        """The task running on the current CPU."""
        ...
