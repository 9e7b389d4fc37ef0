"""The attack campaign's x86 half (PKS): what :class:`kpsim.attack.ops.AttackOps` reads.

- blocked: the store took a #PF whose error code has P, W/R and PK set and U/S clear
  (a supervisor write to a present page, stopped by a protection key:
  ``X86_PF_PROT | X86_PF_WRITE | X86_PF_PK``, ``enum x86_pf_error_code`` in
  ``arch/x86/include/asm/trap_pf.h``). That is the fault Linux's ``do_kern_addr_fault``
  (``arch/x86/mm/fault.c``) receives for it: Ira Weiny's PKS series relaxes its
  ``WARN_ON_ONCE(hw_error_code & X86_PF_PK)`` to "PK without X86_FEATURE_PKS" and
  offers the fault to ``pks_handle_key_fault`` (a per-key callback); kpsim's x86 port
  registers none for the page-table key (there is no upstream x86 kpkeys), so the
  store is not retried and the fault goes on to the exception-table fixup
  (``copy_to_kernel_nofault``) or the oops. The PK bit is set whenever the key
  denies the access, even where the ordinary rights deny it too (SDM 4.7), and so is
  the verdict here. One error code is kept per class (``blocked_pf_error_code``, with
  ``blocked_pf``, its reading by :func:`kpsim.hw.x86.fault.pf_summary`; ``kpsim
  decode pf-error VALUE`` explains it);
- the attacker's window: its CPU's IA32_PKRS leaves ``KPKEYS_PKEY_PGTABLES`` neither
  access- nor write-disabled (with CR4.PKS and CR0.WP set; without CR4.PKS no key is
  checked, so every table page is writable);
- entries: 4-level paging entries (:mod:`kpsim.hw.x86.pte`); a table pointer is a
  present entry with PS clear below the PGD; a malicious value is a present,
  writable leaf (a 1 GiB PDPTE or 2 MiB PDE with PS set, or a PTE) with key 0, U/S
  set for a user PTE, NX set (as the arm64 half leaves PXN set: the gain sought is a
  write). Gains are judged by :func:`kpsim.hw.x86.mmu.walk` and
  :func:`~kpsim.hw.x86.mmu.access_error` with the attacker's IA32_PKRS, and each
  landed entry's change is listed (``entry_change``: present, RW, U/S, PS, NX, the
  address, the key).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kpsim.arch.x86.memory import PAGE_OFFSET, START_KERNEL_MAP
from kpsim.errors import AccessFault
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.fault import (
    PF_PK,
    PF_PROT,
    PF_RSVD,
    PF_USER,
    PF_WRITE,
    GeneralProtection,
    PageFault,
    pf_summary,
)
from kpsim.hw.x86.mmu import Paging, access_error, walk
from kpsim.hw.x86.pkeys import access_disabled, write_disabled
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_PGTABLES

_U = np.uint64
_P, _PS = _U(e.P), _U(e.PS)
_ADDR = e.addr_mask(e.MAX_MAXPHYADDR)
_BLOCKED = PF_PROT | PF_WRITE | PF_PK
#: the VA of entry 0 of a 4-level PGD with the upper half sign-extended: entry i >= 256
#: maps 0xffff000000000000 + (i << 39), which is all the kernel walks reach
_KERNEL_PGD_BASE = (1 << 64) - (1 << 48)


def _hw_level(level: int) -> int:
    """The walk's level (4 PML4 .. 1 PT) of a Linux level (0 PGD .. 3 PTE)."""
    return 4 - level


class X86Ops:
    """:class:`kpsim.attack.ops.AttackOps` for the x86 machine."""

    name = "x86"
    hw = "PKS"
    kernel_pgd_base = _KERNEL_PGD_BASE
    text_size = 8 << 20  # arch/x86/init.py: text 8 MiB, rodata 4 MiB, data 4 MiB
    ro_size = 12 << 20
    user_words = ("user_read", "user_write", "CPL 3 access")

    def kimage_va(self, m: Any) -> int:
        """The image's start in the high kernel mapping (``__START_KERNEL_map + pa``)."""
        return START_KERNEL_MAP + int(m.arch.kimage_pa)

    def kimage_size(self, m: Any) -> int:
        return int(m.arch.kimage_size)

    def image_alias(self, m: Any, pa: int) -> int | None:
        """``pa``'s VA in the kernel image mapping, None outside the image
        (``cleanup_highmap`` leaves only the image mapped at ``__START_KERNEL_map``)."""
        lo = int(m.arch.kimage_pa)
        return START_KERNEL_MAP + pa if lo <= pa < lo + int(m.arch.kimage_size) else None

    def classify(self, f: PageFault | GeneralProtection | None) -> str:
        """``landed``, ``blocked`` (a supervisor write stopped by a key: P, W, PK) or
        another fault: ``permission`` (P without PK: R/W or SMAP), ``not_present``,
        ``reserved_bit``, ``general_protection``."""
        if f is None:
            return "landed"
        if isinstance(f, GeneralProtection):
            return "general_protection"
        code = f.error_code
        if not code & PF_PROT:
            return "not_present"
        if code & PF_RSVD:
            return "reserved_bit"
        if code & _BLOCKED == _BLOCKED and not code & PF_USER:
            return "blocked"
        return "permission"

    def blocked_fields(self, f: PageFault | None) -> dict[str, object]:
        if f is None:
            return {"blocked_pf_error_code": None, "blocked_pf": None}
        code = f.error_code
        return {"blocked_pf_error_code": f"{code:#x}", "blocked_pf": pf_summary(code)}

    def pgtables_writable(self, cpu: Any) -> bool:
        """Would the CPU's IA32_PKRS let a supervisor write reach a page of
        ``KPKEYS_PKEY_PGTABLES`` (SDM 4.6.2: AD, or WD with CR0.WP, denies it)?"""
        p: Paging = cpu.paging()
        if not p.pks:
            return True
        k = KPKEYS_PKEY_PGTABLES
        return not (access_disabled(p.pkrs, k) or (p.wp and write_disabled(p.pkrs, k)))

    def table_slots(self, frame: Any, level: int) -> list[int]:
        """Indices of the entries of a level 0-2 table that point at a table: present,
        and PS clear below the PGD."""
        present = (frame & _P) != 0
        tables = present if level == 0 else present & ((frame & _PS) == 0)
        out: list[int] = np.nonzero(tables)[0].tolist()
        return out

    def table_pa(self, entry: int) -> int:
        return entry & _ADDR

    def malicious(self, kpa: int, level: int, *, user: bool) -> int:
        """A present, writable leaf at ``level`` over ``kpa`` (key 0, NX; U/S if ``user``,
        else global as kernel leaves are)."""
        hw = _hw_level(level)
        base = e.leaf_address(kpa, hw)
        return e.leaf_entry(base, hw, rw=True, us=user, nx=True, g=not user, dirty=True)

    def entry_change(self, old: int, new: int, level: int) -> dict[str, object]:
        """What the landed write changed in the entry, in its bits' names."""
        hw = _hw_level(level)
        was = bool(old & e.P)
        out = [] if was else ["P set (the slot was empty)"]
        for bit, name in ((e.RW, "RW"), (e.US, "U/S")):
            if new & bit and not (was and old & bit):
                out.append(f"{name} set")
        if hw in (2, 3) and new & e.PS and not (was and old & e.PS):
            out.append("PS set (a table pointer became a leaf)" if was else "PS set")
        if was and old & e.NX and not new & e.NX:
            out.append("NX cleared")
        if was and _address(old, hw) != _address(new, hw):
            out.append(f"address {_address(old, hw):#x} -> {_address(new, hw):#x}")
        if was and e.is_leaf(old, hw) and e.pkey(old) != e.pkey(new):
            out.append(f"key {e.pkey(old)} -> {e.pkey(new)}")
        return {"entry_change": out}

    def linear_pkey(self, m: Any, pa: int) -> int | None:
        paging = Paging(maxphyaddr=m.hw.cpus[0].maxphyaddr, pks=True)
        leaf = walk(m.mem, m.arch.swapper_pg_dir, PAGE_OFFSET + pa, paging)
        return None if isinstance(leaf, PageFault) else leaf.pkey

    def kernel_writable(self, m: Any, cpu: Any, root: int, va: int, pa: int) -> bool:
        """A fresh walk from ``root`` reaches ``pa`` at ``va`` and SDM 4.6 lets the CPU
        (CPL 0, its CR0.WP, SMAP and IA32_PKRS) write it."""
        paging = cpu.paging()
        leaf = walk(m.mem, root, va, paging, PF_WRITE)
        if isinstance(leaf, PageFault) or leaf.pa(va) != pa:
            return False
        return access_error(leaf, write=True, fetch=False, user=False, paging=paging) == 0

    def user_rights(
        self, m: Any, cpu: Any, root: int, va: int, pa: int
    ) -> tuple[bool, bool] | None:
        """(read, write) at CPL 3 by a fresh walk, None if user mode cannot read ``pa``."""
        paging = cpu.paging()
        leaf = walk(m.mem, root, va, paging, PF_USER)
        if isinstance(leaf, PageFault) or leaf.pa(va) != pa:
            return None
        if access_error(leaf, write=False, fetch=False, user=True, paging=paging):
            return None
        write = access_error(leaf, write=True, fetch=False, user=True, paging=paging) == 0
        return True, write

    def user_load(self, cpu: Any, va: int) -> int | None:
        try:
            return int(cpu.load(va, 1, user=True))
        except AccessFault:
            return None

    def user_store(self, cpu: Any, va: int, byte: int) -> bool:
        return cpu.try_store(va, byte, 1, user=True) is None

    def drop_tlb(self, cpu: Any) -> None:
        """Every cached translation of the CPU, global ones too (the harness's undo, not
        a counted INVPCID)."""
        cpu.tlb.drop_all()


def _address(v: int, hw: int) -> int:
    """The address an entry holds: the page of a leaf, else the next table."""
    return e.leaf_address(v, hw) if e.is_leaf(v, hw) else v & _ADDR


OPS = X86Ops()
