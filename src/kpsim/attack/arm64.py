"""The attack campaign's arm64 half (POE): what :class:`kpsim.attack.ops.AttackOps` reads.

- blocked: the store took a data abort at the current EL whose ESR (decoded with
  :func:`kpsim.hw.arm64.esr.decode_esr`, as ``do_page_fault`` would see it) is a
  permission fault with ISS2.Overlay and WnR set: the overlay, not the base
  permission, stopped it;
- the attacker's window: its CPU's POR_EL1 in effect (after the last ISB) grants
  write to ``KPKEYS_PKEY_PGTABLES``;
- entries: VMSAv8-64 stage 1 descriptors (4 KiB granule); a malicious value is a
  read-write block or page descriptor (:func:`kpsim.hw.arm64.descriptors.leaf_desc`);
  gains are judged by :func:`kpsim.hw.arm64.mmu.walk` and the POR_EL1 overlay.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kpsim.arch.arm64.memory import KIMAGE_VADDR, PAGE_OFFSET
from kpsim.arch.arm64.setup import KIMAGE_SIZE
from kpsim.errors import AccessFault
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import EC, FaultKind, decode_esr
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import walk
from kpsim.hw.arm64.por import POE_W
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_PGTABLES

_TABLE = np.uint64(3)


class Arm64Ops:
    """:class:`kpsim.attack.ops.AttackOps` for the arm64 machine."""

    name = "arm64"
    hw = "POE"
    kernel_pgd_base = PAGE_OFFSET
    text_size = 8 << 20  # arch/arm64/setup.py KIMAGE_SEGMENTS: text 8 MiB, rodata 4 MiB
    ro_size = 12 << 20
    user_words = ("el0_read", "el0_write", "EL0 access")

    def kimage_va(self, m: Any) -> int:
        return KIMAGE_VADDR

    def kimage_size(self, m: Any) -> int:
        return KIMAGE_SIZE

    def image_alias(self, m: Any, pa: int) -> int | None:
        """The image's own VA of ``pa`` (every page of the image is mapped there)."""
        return KIMAGE_VADDR + (pa - int(m.arch.kimage_pa))

    def classify(self, f: Fault | None) -> str:
        """``landed``, ``blocked`` (overlay permission fault, from the ESR) or another fault."""
        if f is None:
            return "landed"
        esr = decode_esr(f.esr)
        perm = f.kind is FaultKind.PERMISSION and int(str(esr["ec"]), 16) == EC.DABT_CUR
        if perm and esr["overlay"] and esr["wnr"]:
            return "blocked"
        return "permission" if f.kind is FaultKind.PERMISSION else f.kind.name.lower()

    def blocked_fields(self, f: Fault | None) -> dict[str, object]:
        return {"blocked_esr": None if f is None else f"{f.esr:#018x}"}

    def pgtables_writable(self, cpu: Any) -> bool:
        """Does the CPU's POR_EL1 in effect grant write to ``KPKEYS_PKEY_PGTABLES``?"""
        return bool(cpu.por_el1_in_effect[KPKEYS_PKEY_PGTABLES] & POE_W)

    def table_slots(self, frame: Any, level: int) -> list[int]:
        """Indices of the table descriptors (bits 1:0 = 0b11) of a level 0-2 table."""
        out: list[int] = np.nonzero((frame & _TABLE) == _TABLE)[0].tolist()
        return out

    def table_pa(self, entry: int) -> int:
        return entry & d.OA_MASK

    def malicious(self, kpa: int, level: int, *, user: bool) -> int:
        """A read-write leaf at ``level`` whose output covers ``kpa`` (user-accessible,
        non-global, if ``user``)."""
        return d.leaf_desc(kpa & d.BLOCK_OA_MASK[level], level, user=user, ng=user)

    def entry_change(self, old: int, new: int, level: int) -> dict[str, object]:
        return {}  # arm64 reports the gain alone (its output predates the x86 port)

    def linear_pkey(self, m: Any, pa: int) -> int | None:
        t = walk(m.mem, m.arch.swapper_pg_dir, m.arch.phys_to_virt(pa))
        return None if isinstance(t, Fault) else t.po_index

    def kernel_writable(self, m: Any, cpu: Any, root: int, va: int, pa: int) -> bool:
        """A fresh EL1 write walk from ``root`` reaches ``pa`` and the base permission and
        the CPU's overlay both allow the write."""
        tr = walk(m.mem, root, va, el=1, write=True)
        if isinstance(tr, Fault) or tr.page_pa != pa:
            return False
        return bool(tr.perm_el1 & d.Perm.W & cpu.por_el1_in_effect[tr.po_index])

    def user_rights(
        self, m: Any, cpu: Any, root: int, va: int, pa: int
    ) -> tuple[bool, bool] | None:
        """(read, write) at EL0 by a fresh walk, None if EL0 cannot read ``pa`` at ``va``."""
        tr = walk(m.mem, root, va, el=0)
        if isinstance(tr, Fault) or tr.page_pa != pa or not tr.perm_el0 & d.Perm.R:
            return None
        return True, bool(tr.perm_el0 & d.Perm.W)

    def user_load(self, cpu: Any, va: int) -> int | None:
        try:
            return int(cpu.load(va, 1, 0))
        except AccessFault:
            return None

    def user_store(self, cpu: Any, va: int, byte: int) -> bool:
        return cpu.try_store(va, byte, 1, 0) is None

    def drop_tlb(self, cpu: Any) -> None:
        """Every cached translation of the CPU (the harness's undo, not a counted TLBI)."""
        cpu.tlb.invalidate_all()


OPS = Arm64Ops()
