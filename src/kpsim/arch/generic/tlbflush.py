"""The arch-neutral half of user TLB flushing: ``flush_tlb_range``'s rounding to the
stride, and ``tlb_flush(struct mmu_gather *)``'s choice between a full-mm teardown and
a range flush (``include/asm-generic/tlb.h``). The arch issues the invalidations
(arm64 ``__flush_tlb_range``, x86 ``flush_tlb_mm_range``)."""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.base import ArchBase

PAGE_SIZE = 1 << 12


@mypyc_attr(native_class=False)  # see ArchBase
class GenericTlbFlushMixin(ArchBase):
    def _flush_tlb_range(
        self, asid: int, start: int, end: int, stride: int, last_level: bool
    ) -> None:
        """The arch's range flush of a non-empty, stride-aligned range."""
        raise NotImplementedError

    def tlb_flush_fullmm(self, asid: int, freed_tables: bool) -> None:
        """The arch's flush at the end of a full-mm teardown."""
        raise NotImplementedError

    def flush_tlb_range(
        self,
        asid: int,
        start: int,
        end: int,
        *,
        stride: int = PAGE_SIZE,
        last_level: bool = False,
    ) -> None:
        """Flush the user mm with context id ``asid`` over ``[start, end)`` rounded out
        to ``stride``. ``flush_tlb_range()`` itself is ``stride=PAGE_SIZE,
        last_level=False``."""
        start &= ~(stride - 1)
        end = (end + stride - 1) & ~(stride - 1)
        if end <= start:
            return
        self._flush_tlb_range(asid, start, end, stride, last_level)

    def tlb_flush(
        self, asid: int, start: int, end: int, *, stride: int, freed_tables: bool, fullmm: bool
    ) -> None:
        """``tlb_flush(struct mmu_gather *)``: the arch's full-mm flush, else a range
        flush over the gathered range, last-level unless tables were freed."""
        if fullmm:
            self.tlb_flush_fullmm(asid, freed_tables)
            return
        self.flush_tlb_range(asid, start, end, stride=stride, last_level=not freed_tables)
