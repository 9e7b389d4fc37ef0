"""x86-64 4-level paging-structure entries (Intel SDM vol. 3A, 4.5, tables 4-14 to 4-20).

Bit names follow Linux's ``arch/x86/include/asm/pgtable_types.h`` (``_PAGE_BIT_*``):
P, RW, USER, PWT, PCD, ACCESSED, DIRTY, PSE (PS), GLOBAL, PAT (bit 7 of a PTE, bit 12
of a large leaf), the protection key in bits 62:59 of a leaf (``_PAGE_BIT_PKEY_BIT0``)
and NX in bit 63. Entries are plain ``int``s, 64-bit little-endian in physical memory.

Levels are numbered as the walk meets them: 4 = PML4, 3 = PDPT, 2 = PD, 1 = PT.
Left out: 5-level paging (LA57), PAT memory types beyond the bits, HLAT.
"""

from __future__ import annotations

from kpsim.errors import InputError

P = 1 << 0  # _PAGE_PRESENT
RW = 1 << 1  # _PAGE_RW
US = 1 << 2  # _PAGE_USER
PWT = 1 << 3  # _PAGE_PWT
PCD = 1 << 4  # _PAGE_PCD
A = 1 << 5  # _PAGE_ACCESSED
D = 1 << 6  # _PAGE_DIRTY (leaf only)
PS = 1 << 7  # _PAGE_PSE (PDPTE, PDE); _PAGE_PAT in a PTE
PAT_4K = 1 << 7
G = 1 << 8  # _PAGE_GLOBAL (leaf only)
PAT_LARGE = 1 << 12  # _PAGE_PAT_LARGE
PKEY_SHIFT = 59  # _PAGE_BIT_PKEY_BIT0
PKEY_MASK = 0xF << PKEY_SHIFT
NX = 1 << 63  # _PAGE_NX

LEVEL_NAME = {4: "pml4e", 3: "pdpte", 2: "pde", 1: "pte"}
LEVEL_SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}
#: Linux's names for the same levels (p4d is folded with 4-level paging).
LINUX_NAME = {4: "pgd", 3: "pud", 2: "pmd", 1: "pte"}
MAX_MAXPHYADDR = 52


def addr_mask(maxphyaddr: int) -> int:
    """Bits (MAXPHYADDR-1):12 of an entry: the physical address of a table or 4K page."""
    return ((1 << maxphyaddr) - 1) & ~0xFFF


def reserved_mask(level: int, value: int, maxphyaddr: int, *, nxe: bool) -> int:
    """The bits of a present entry at ``level`` that must be zero (SDM 4.5.4, 4.6.1).

    Bits MAXPHYADDR..51 of every entry; PS in a PML4E; bits 29:13 of a 1 GiB PDPTE and
    20:13 of a 2 MiB PDE (the address bits below the page size, above PAT); NX when
    EFER.NXE = 0. Bits 62:52 are ignored (or the protection key), never reserved.
    """
    rsvd = ((1 << MAX_MAXPHYADDR) - 1) & ~((1 << maxphyaddr) - 1)
    if not nxe:
        rsvd |= NX
    if level == 4:
        rsvd |= PS
    elif level == 3 and value & PS:
        rsvd |= ((1 << 30) - 1) & ~((1 << 13) - 1)
    elif level == 2 and value & PS:
        rsvd |= ((1 << 21) - 1) & ~((1 << 13) - 1)
    return rsvd


def is_leaf(value: int, level: int) -> bool:
    """A present entry that maps a page: a PTE, or a PDPTE/PDE with PS set."""
    return bool(value & P) and (level == 1 or (level in (2, 3) and bool(value & PS)))


def leaf_address(value: int, level: int, maxphyaddr: int = MAX_MAXPHYADDR) -> int:
    """The physical base of the page a leaf maps (1 GiB, 2 MiB or 4 KiB aligned)."""
    return value & addr_mask(maxphyaddr) & ~((1 << LEVEL_SHIFT[level]) - 1)


def pkey(value: int) -> int:
    return (value >> PKEY_SHIFT) & 0xF


def set_pkey(value: int, key: int) -> int:
    if not 0 <= key < 16:
        raise InputError(f"protection key {key} out of range 0-15")
    return (value & ~PKEY_MASK) | (key << PKEY_SHIFT)


def table_entry(table_pa: int, *, rw: bool = True, us: bool = False, nx: bool = False) -> int:
    """A non-leaf entry pointing at the next table (Linux's ``_KERNPG_TABLE`` with RW,
    ``_PAGE_TABLE`` with US as well)."""
    v = (table_pa & addr_mask(MAX_MAXPHYADDR)) | P | A
    if rw:
        v |= RW
    if us:
        v |= US
    if nx:
        v |= NX
    return v


def leaf_entry(
    pa: int,
    level: int = 1,
    *,
    rw: bool = True,
    us: bool = False,
    nx: bool = False,
    g: bool = False,
    key: int = 0,
    accessed: bool = True,
    dirty: bool = False,
) -> int:
    """A leaf entry at ``level`` (1: 4 KiB PTE, 2: 2 MiB PDE, 3: 1 GiB PDPTE)."""
    size = 1 << LEVEL_SHIFT[level]
    if pa % size:
        raise InputError(f"physical address {pa:#x} is not aligned to the {size:#x} page")
    v = pa | P
    if level > 1:
        v |= PS
    for on, bit in ((rw, RW), (us, US), (nx, NX), (g, G), (accessed, A), (dirty, D)):
        if on:
            v |= bit
    return set_pkey(v, key)


def entry_rows(value: int, level: int = 1) -> list[tuple[str, str, str]]:
    """(bits, field, meaning) rows of an entry at ``level``, as ``kpsim decode`` prints."""
    if not value & P:
        return [("0", "P", "0: not present (bits 63:1 are ignored by the walker)")]
    leaf = is_leaf(value, level)
    rows = [
        ("0", "P", "1: present"),
        ("1", "R/W", "1: writable" if value & RW else "0: read-only"),
        ("2", "U/S", "1: user" if value & US else "0: supervisor"),
        ("3", "PWT", "1: write-through" if value & PWT else "0: write-back"),
        ("4", "PCD", "1: cache disabled" if value & PCD else "0: cacheable"),
        ("5", "A", "1: accessed" if value & A else "0: not accessed"),
    ]
    if level == 1:
        rows.append(("6", "D", "1: dirty" if value & D else "0: clean"))
        rows.append(("7", "PAT", str(int(bool(value & PAT_4K)))))
    elif level == 4:
        ps = "1: reserved (must be 0 in a PML4E): #PF with RSVD" if value & PS else "0"
        rows.append(("7", "PS", ps))
    else:
        if leaf:
            rows.append(("6", "D", "1: dirty" if value & D else "0: clean"))
        size = "1 GiB page" if level == 3 else "2 MiB page"
        rows.append(("7", "PS", f"1: maps a {size}" if leaf else "0: points to a table"))
    if leaf:
        rows.append(("8", "G", "1: global" if value & G else "0: not global"))
        if level > 1:
            rows.append(("12", "PAT", str(int(bool(value & PAT_LARGE)))))
        lo = LEVEL_SHIFT[level]
        rows.append((f"51:{lo}", "address", f"{leaf_address(value, level):#x} (the page's base)"))
        rows.append(("62:59", "PKEY", f"{pkey(value)} (protection key, if CR4.PKE/PKS)"))
    else:
        rows.append(("51:12", "address", f"{value & addr_mask(52):#x} (the next table)"))
    rows.append(("63", "XD", "1: no execute (if EFER.NXE)" if value & NX else "0: executable"))
    return rows


def describe(value: int, level: int = 1) -> dict[str, object]:
    """The entry in words, for ``kpsim decode --json``."""
    out: dict[str, object] = {"raw": f"{value:#018x}", "level": LEVEL_NAME[level]}
    if not value & P:
        out["present"] = False
        return out
    leaf = is_leaf(value, level)
    out.update(
        present=True,
        kind="leaf" if leaf else "table",
        writable=bool(value & RW),
        user=bool(value & US),
        accessed=bool(value & A),
        nx=bool(value & NX),
    )
    if leaf:
        out.update(
            address=f"{leaf_address(value, level):#x}",
            size={1: "4K", 2: "2M", 3: "1G"}[level],
            dirty=bool(value & D),
            pkey=pkey(value),
        )
        out["global"] = bool(value & G)
    else:
        out["address"] = f"{value & addr_mask(52):#x}"
    return out
