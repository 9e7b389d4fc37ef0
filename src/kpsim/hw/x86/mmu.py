"""The x86-64 4-level page walker and the access-rights rules (Intel SDM vol. 3A 4.5-4.6).

:func:`walk` reads the PML4, PDPT, PD and PT entries from simulated physical memory
(``CR3`` bits 51:12 hold the PML4's address), stops at a leaf (PS=1 in a PDPTE: a 1 GiB
page, in a PDE: a 2 MiB page; a PTE: a 4 KiB page) and gathers the rights of every
level: writable only if R/W=1 at every level, user only if U/S=1 at every level,
execute-disable if XD=1 at any level (SDM 4.6.1). A not-present entry gives a #PF
with P=0; a reserved bit (above MAXPHYADDR, PS in a PML4E, the low address bits of a
large page, XD with EFER.NXE=0) a #PF with P=1 and RSVD=1.

:func:`access_error` applies SDM 4.6 to a leaf for one access: supervisor-mode and
user-mode rules, CR0.WP, EFER.NXE, SMEP/SMAP, and the protection keys of 4.6.2 (PKRU
for user-mode addresses under CR4.PKE, IA32_PKRS for supervisor-mode addresses under
CR4.PKS, data accesses only). Linux reads the same bits in
``arch/x86/mm/fault.c`` (``access_error``, ``pgtable_bad``) and ``arch/x86/mm/pkeys.c``.

Left out: 5-level paging (LA57), implicit supervisor accesses (the walk's own reads
are not checked), shadow-stack accesses and HLAT, memory types (PAT/MTRR: the bits
are kept, never acted on).
"""

from __future__ import annotations

from dataclasses import dataclass

from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.fault import (
    PF_INSTR,
    PF_PK,
    PF_PROT,
    PF_RSVD,
    PF_USER,
    PF_WRITE,
    PageFault,
)
from kpsim.hw.x86.pkeys import access_disabled, write_disabled

VA_BITS = 48
LEVELS = (4, 3, 2, 1)


def canonical(va: int) -> bool:
    """Bits 63:47 all equal (SDM 3.3.7.1); a non-canonical access raises #GP, not #PF."""
    top = va >> (VA_BITS - 1)
    return 0 <= va < 1 << 64 and (top == 0 or top == (1 << (64 - VA_BITS + 1)) - 1)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A completed walk as the TLB caches it: the page, its size, the rights combined
    over all levels, the protection key, G and D, and where each entry sits."""

    page_pa: int  # base of the whole page (1 GiB, 2 MiB or 4 KiB aligned)
    level: int  # 3: 1 GiB, 2: 2 MiB, 1: 4 KiB
    writable: bool
    user: bool
    nx: bool
    pkey: int
    global_: bool
    dirty: bool
    entry: int  # the leaf entry's value
    path: tuple[int, ...]  # physical addresses of the entries read, PML4E first

    @property
    def shift(self) -> int:
        return e.LEVEL_SHIFT[self.level]

    def pa(self, va: int) -> int:
        return self.page_pa + (va & ((1 << self.shift) - 1))


@dataclass(frozen=True, slots=True)
class Paging:
    """The control-register bits the walk and the rights check read."""

    maxphyaddr: int = 46
    nxe: bool = True  # IA32_EFER.NXE
    wp: bool = True  # CR0.WP
    pke: bool = False  # CR4.PKE
    pks: bool = False  # CR4.PKS
    smep: bool = False  # CR4.SMEP
    smap: bool = False  # CR4.SMAP
    pkru: int = 0
    pkrs: int = 0
    ac: bool = False  # EFLAGS.AC (SMAP override)


def access_bits(*, write: bool, fetch: bool, user: bool, paging: Paging) -> int:
    """The error-code bits an access contributes whatever the cause (W/R, U/S, I/D)."""
    code = 0
    if write:
        code |= PF_WRITE
    if user:
        code |= PF_USER
    if fetch and (paging.nxe or paging.smep):
        code |= PF_INSTR
    return code


def walk(mem: PhysicalMemory, cr3: int, va: int, paging: Paging, bits: int = 0) -> Leaf | PageFault:
    """Walk the tables from the PML4 at ``cr3 & addr_mask`` for canonical ``va``.

    Returns the :class:`Leaf` or a :class:`PageFault` (``bits``: the access's W/U/I
    bits, see :func:`access_bits`) naming the level where the walk stopped.
    """
    mask = e.addr_mask(paging.maxphyaddr)
    table = cr3 & mask
    writable = user = True
    nx = False
    path: list[int] = []
    for level in LEVELS:
        entry_pa = table + (((va >> e.LEVEL_SHIFT[level]) & 0x1FF) << 3)
        value = mem.read64(entry_pa)
        path.append(entry_pa)
        if not value & e.P:
            return PageFault(va, bits, level)
        if value & e.reserved_mask(level, value, paging.maxphyaddr, nxe=paging.nxe):
            return PageFault(va, bits | PF_PROT | PF_RSVD, level)
        writable = writable and bool(value & e.RW)
        user = user and bool(value & e.US)
        nx = nx or (paging.nxe and bool(value & e.NX))
        if e.is_leaf(value, level):
            keys = paging.pke or paging.pks
            return Leaf(
                page_pa=e.leaf_address(value, level, paging.maxphyaddr),
                level=level,
                writable=writable,
                user=user,
                nx=nx,
                pkey=e.pkey(value) if keys else 0,
                global_=bool(value & e.G),
                dirty=bool(value & e.D),
                entry=value,
                path=tuple(path),
            )
        table = value & mask
    raise AssertionError("unreachable: a present PTE is always a leaf")


def access_error(
    leaf: Leaf, *, write: bool, fetch: bool, user: bool, paging: Paging, bits: int = 0
) -> int:
    """0 if SDM 4.6 allows the access to ``leaf``, else the #PF error code (P=1).

    ``user``: a user-mode access (CPL 3); otherwise supervisor-mode. The PK bit is set
    exactly when a protection-key register disallows the data access (SDM 4.7), even
    if the ordinary rights also deny it.
    """
    denied = False
    if user:
        if not leaf.user:
            denied = True  # user-mode accesses to supervisor-mode addresses: never
        elif (write and not leaf.writable) or (fetch and leaf.nx):
            denied = True
    elif fetch:
        if (leaf.user and paging.smep) or leaf.nx:
            denied = True
    else:
        smap = leaf.user and paging.smap and not paging.ac
        if smap or (write and paging.wp and not leaf.writable):
            denied = True
    pk = False
    if not fetch:
        k = leaf.pkey
        if leaf.user and paging.pke:
            pkr = paging.pkru
            pk = access_disabled(pkr, k) or (
                write and write_disabled(pkr, k) and (user or paging.wp)
            )
        elif not leaf.user and paging.pks and not user:
            pkr = paging.pkrs
            pk = access_disabled(pkr, k) or (write and write_disabled(pkr, k) and paging.wp)
    if not denied and not pk:
        return 0
    return bits | PF_PROT | (PF_PK if pk else 0)
