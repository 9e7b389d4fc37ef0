"""What an attack campaign needs of an architecture, and which one a machine has.

The campaign (:mod:`kpsim.attack.campaign`, :mod:`~kpsim.attack.targets`,
:mod:`~kpsim.attack.timing`) is written once; the parts that read hardware state are
an :class:`AttackOps` per architecture, :mod:`kpsim.attack.arm64` (POE: ESR_EL1,
POR_EL1, VMSAv8-64 descriptors) and :mod:`kpsim.attack.x86` (PKS: the #PF error code,
IA32_PKRS, 4-level paging entries). Levels are Linux's on both (0 PGD .. 3 PTE), and
so are the VA shifts of an entry at each level (39, 30, 21, 12: 4 KiB pages, 48-bit
VA). :func:`ops_for` chooses by the arch object's ``name``, as the audit does.
"""

from __future__ import annotations

from typing import Any, Protocol

#: VA shift of an entry at each Linux level (the same on arm64 4K/48-bit and x86 4-level)
LEVEL_SHIFT = {0: 39, 1: 30, 2: 21, 3: 12}


def level_size(level: int) -> int:
    return 1 << LEVEL_SHIFT[level]


class AttackOps(Protocol):
    """An architecture's half of the campaign (every method reads the machine afresh)."""

    name: str
    hw: str  # the pkey hardware's name in notes: "POE", "PKS"
    kernel_pgd_base: int  # the VA of entry 0 of the kernel root, as the walk counts it
    text_size: int  # the image's text, then rodata: read-only in every honest mapping
    ro_size: int
    #: (read key, write key, what the live proof is) of a user_pte gain
    user_words: tuple[str, str, str]

    def kimage_va(self, m: Any) -> int: ...
    def kimage_size(self, m: Any) -> int: ...
    def image_alias(self, m: Any, pa: int) -> int | None: ...
    def classify(self, f: Any) -> str: ...
    def blocked_fields(self, f: Any) -> dict[str, object]: ...
    def pgtables_writable(self, cpu: Any) -> bool: ...
    def table_slots(self, frame: Any, level: int) -> list[int]: ...
    def table_pa(self, entry: int) -> int: ...
    def malicious(self, kpa: int, level: int, *, user: bool) -> int: ...
    def entry_change(self, old: int, new: int, level: int) -> dict[str, object]: ...
    def linear_pkey(self, m: Any, pa: int) -> int | None: ...
    def kernel_writable(self, m: Any, cpu: Any, root: int, va: int, pa: int) -> bool: ...
    def user_rights(
        self, m: Any, cpu: Any, root: int, va: int, pa: int
    ) -> tuple[bool, bool] | None: ...
    def user_load(self, cpu: Any, va: int) -> int | None: ...
    def user_store(self, cpu: Any, va: int, byte: int) -> bool: ...
    def drop_tlb(self, cpu: Any) -> None: ...


def ops_for(arch: Any) -> AttackOps:
    """The :class:`AttackOps` of the arch object ``arch`` (``machine.arch``)."""
    if getattr(arch, "name", "arm64") == "x86":
        from kpsim.attack.x86 import OPS as x86_ops

        return x86_ops
    from kpsim.attack.arm64 import OPS as arm64_ops

    return arm64_ops
