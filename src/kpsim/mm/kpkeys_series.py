"""Which posting of the kpkeys series the model follows (the ``series`` kernel option).

Each :class:`Series` is a set of behaviours, each taken from one posting (sources in
docs/fidelity.md, "Series versions"):

- ``api``: ``"set-restore"`` is ``kpkeys_set_context()`` / ``kpkeys_restore_pkey_reg()``
  (v4 to v8 as posted; ``include/linux/kpkeys.h`` of the v7-era linux-mm revision): the
  arm64 hook always reads, writes POR_EL1 and issues an ISB, and returns the previous
  value. ``"enter-leave"`` is ``kpkeys_enter_context()`` / ``kpkeys_leave_context()``
  returning ``struct kpkeys_state`` (``include/linux/kpkeys.h``,
  ``include/linux/kpkeys_types.h``, ``arch/arm64/include/asm/kpkeys.h`` of the linux-mm
  mirror after the review of v8 01/24): the enter hook writes nothing (and issues no ISB)
  when the new value equals the current one and returns ``entered_context = false``, and
  leave is then a no-op.
- ``lazy_guard``: when the page-table guard switches inside a lazy-MMU section.
  ``"tif"``: never while ``TIF_LAZY_MMU`` is set (RFC v4 18/18); ``"tif-irq"``: unless
  in interrupt context (``in_interrupt() || !test_thread_flag(TIF_LAZY_MMU)``, RFC v5
  18/18, v6 28/30); ``"por"``: the guard always enters and the skip-if-unchanged enter
  makes it free where POR_EL1 already grants the page-table context (kpsim's reading of
  the enter/leave API for batching: an exception handler, whose entry reset POR_EL1,
  switches for itself whatever kind of exception it is).
- ``eret_restore``: ``"always"`` (the return path writes ``pt_regs::por_el1`` back;
  spec §3.6) or ``"if-entered"`` (only when entry reset the register: the enter/leave
  state applied to the entry's reset).
- ``pba``: v6's block allocator is the default allocator (on any linear map: on a
  PTE-only one it runs as v6's "noblock" allocator); v4, v5, v7 and v8 use the
  minimal allocator and assume a PTE-mapped linear map, so on a block map they need
  ``allow_unsafe_split`` (the recursion the PBA was made for). ``block_pba``: the
  default on a block map is the PBA; true for v6 and, as a kpsim choice, for
  enter-leave (the allocator of the tree after v8 for block maps is not known).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    api: str  # "set-restore" | "enter-leave"
    lazy_guard: str  # "tif" | "tif-irq" | "por"
    eret_restore: str  # "always" | "if-entered"
    pba: bool
    block_pba: bool
    posted: str

    @property
    def skip_unchanged(self) -> bool:
        return self.api == "enter-leave"


SERIES: dict[str, Series] = {
    s.name: s
    for s in (
        Series("v4", "set-restore", "tif", "always", False, False, "RFC v4, 2025-04-11"),
        Series("v5", "set-restore", "tif-irq", "always", False, False, "RFC v5, 2025-08-15"),
        Series("v6", "set-restore", "tif-irq", "always", True, True, "v6, 2026-02-27"),
        Series("v7", "set-restore", "tif-irq", "always", False, False, "RFC v7, 2026-05-05"),
        Series("v8", "set-restore", "tif-irq", "always", False, False, "RFC v8, 2026-05-26"),
        Series(
            "enter-leave",
            "enter-leave",
            "por",
            "if-entered",
            False,
            True,
            "linux-mm, after review of v8 01/24 (2026-06-16)",
        ),
    )
}
#: the names the ``series`` option accepts (the issue's four, plus v4/v5 for study)
SERIES_NAMES: tuple[str, ...] = tuple(SERIES)
DEFAULT_SERIES = "enter-leave"
