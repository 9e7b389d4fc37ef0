"""VMSAv8-64 stage-1 translation table descriptors, 4 KiB granule, 48-bit VA and PA.

Models the Arm ARM (DDI 0487) D8.3 descriptor formats as Linux uses them
(``arch/arm64/include/asm/pgtable-hwdef.h``): table descriptors at levels 0-2,
block descriptors at level 1 (1 GiB) and level 2 (2 MiB), page descriptors at
level 3, the contiguous hint (16 entries: 64 KiB at level 3, 32 MiB at level 2)
and POIndex in bits 62:60 (FEAT_S1POE).

Descriptors are plain ``int``s; :class:`Descriptor` is a decoded view for humans
and tests. Left out: 52-bit output addresses (FEAT_LPA/LPA2), 128-bit descriptors,
and the permission-indirection (FEAT_S1PIE) reading of the permission bits, which
kpsim replaces by the direct AP/XN reading (docs/fidelity.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from kpsim.errors import InputError

# Bit positions (Arm ARM D8.3; Linux pgtable-hwdef.h names in comments).
VALID: Final = 1 << 0  # PTE_VALID
TYPE: Final = 1 << 1  # PTE_TYPE_PAGE at level 3, PMD_TYPE_TABLE at levels 0-2
ATTRINDX_SHIFT: Final = 2  # PTE_ATTRINDX(t)
ATTRINDX_MASK: Final = 0x7 << ATTRINDX_SHIFT
NS: Final = 1 << 5
AP_SHIFT: Final = 6  # AP[2:1] in bits 7:6
AP_MASK: Final = 0x3 << AP_SHIFT
AP_USER: Final = 1 << 6  # PTE_USER: AP[1], EL0 access
AP_RDONLY: Final = 1 << 7  # PTE_RDONLY: AP[2], read-only
SH_SHIFT: Final = 8
SH_MASK: Final = 0x3 << SH_SHIFT
SH_INNER: Final = 0x3 << SH_SHIFT  # PTE_SHARED
AF: Final = 1 << 10  # PTE_AF
NG: Final = 1 << 11  # PTE_NG
OA_MASK: Final = ((1 << 48) - 1) & ~0xFFF  # output address, bits 47:12
GP: Final = 1 << 50  # PTE_GP (BTI guarded page)
DBM: Final = 1 << 51  # PTE_DBM, Linux's PTE_WRITE
CONT: Final = 1 << 52  # PTE_CONT
PXN: Final = 1 << 53  # PTE_PXN
UXN: Final = 1 << 54  # PTE_UXN
SW_DIRTY: Final = 1 << 55  # PTE_DIRTY (software)
SW_SPECIAL: Final = 1 << 56  # PTE_SPECIAL (software)
POINDEX_SHIFT: Final = 60  # PTE_PO_IDX_0
POINDEX_MASK: Final = 0x7 << POINDEX_SHIFT  # PTE_PO_IDX_MASK = GENMASK(62, 60)

# Table descriptor attribute bits (hierarchical permissions).
PXN_TABLE: Final = 1 << 59
UXN_TABLE: Final = 1 << 60
AP_TABLE_NO_EL0: Final = 1 << 61  # APTable[0]
AP_TABLE_RDONLY: Final = 1 << 62  # APTable[1]
NS_TABLE: Final = 1 << 63

CONT_ENTRIES: Final = 16

LEVEL_SHIFT: Final = {0: 39, 1: 30, 2: 21, 3: 12}
LEVEL_NAME: Final = {0: "pgd", 1: "pud", 2: "pmd", 3: "pte"}
NAME_LEVEL: Final = {v: k for k, v in LEVEL_NAME.items()}
BLOCK_OA_MASK: Final = {1: OA_MASK & ~((1 << 30) - 1), 2: OA_MASK & ~((1 << 21) - 1), 3: OA_MASK}


class MemAttr(IntEnum):
    """Linux's MAIR_EL1 slots (``arch/arm64/include/asm/memory.h``)."""

    NORMAL = 0
    NORMAL_TAGGED = 1
    NORMAL_NC = 2
    DEVICE_nGnRnE = 3
    DEVICE_nGnRE = 4


class Perm(IntFlag):
    """Access rights, in the POE field encoding: R=1, X=2, W=4."""

    NONE = 0
    R = 1
    X = 2
    W = 4
    RX = 3
    RW = 5
    WX = 6
    RWX = 7


class Kind(IntEnum):
    INVALID = 0
    TABLE = 1
    BLOCK = 2
    PAGE = 3
    RESERVED = 4


def level_size(level: int) -> int:
    return 1 << LEVEL_SHIFT[level]


def kind(value: int, level: int) -> Kind:
    """What a descriptor is at a level (Arm ARM D8.3.1)."""
    if not value & VALID:
        return Kind.INVALID
    if level == 3:
        return Kind.PAGE if value & TYPE else Kind.RESERVED
    if value & TYPE:
        return Kind.TABLE
    return Kind.BLOCK if level in (1, 2) else Kind.RESERVED


def is_leaf(value: int, level: int) -> bool:
    k = kind(value, level)
    return k is Kind.BLOCK or k is Kind.PAGE


def output_address(value: int, level: int) -> int:
    """The physical address a descriptor points at (table) or maps (block/page)."""
    if value & VALID and value & TYPE and level < 3:
        return value & OA_MASK
    return value & BLOCK_OA_MASK[level]


def po_index(value: int) -> int:
    return (value >> POINDEX_SHIFT) & 0x7


def set_po_index(value: int, pkey: int) -> int:
    return (value & ~POINDEX_MASK) | ((pkey & 0x7) << POINDEX_SHIFT)


def base_perms(value: int) -> tuple[int, int]:
    """(EL1, EL0) base permissions of a leaf, from AP[2:1], PXN and UXN.

    Arm ARM D8.4.1.2 (``AArch64.S1DirectBasePermissions``): EL1 can always read;
    AP[2] removes write at both ELs; AP[1] grants EL0 read (and write). EL0 execute
    depends on UXN alone (AP[1] = 0 with UXN = 0 is Linux's execute-only
    ``PAGE_EXECONLY``). EL1 cannot execute memory that is writable at EL0.
    """
    el1 = Perm.R if value & AP_RDONLY else Perm.RW
    el0 = Perm.NONE
    if value & AP_USER:
        el0 = Perm.R if value & AP_RDONLY else Perm.RW
    if not value & UXN:
        el0 |= Perm.X
    if not value & PXN and not (value & AP_USER and not value & AP_RDONLY):
        el1 |= Perm.X
    return int(el1), int(el0)


def table_desc(table_pa: int, *, pxn_table: bool = False, uxn_table: bool = False) -> int:
    """A table descriptor (Linux's ``__pmd_populate`` and friends)."""
    v = (table_pa & OA_MASK) | TYPE | VALID
    if pxn_table:
        v |= PXN_TABLE
    if uxn_table:
        v |= UXN_TABLE
    return v


def leaf_desc(
    pa: int,
    level: int,
    *,
    attr: int = MemAttr.NORMAL,
    user: bool = False,
    rdonly: bool = False,
    pxn: bool = True,
    uxn: bool = True,
    ng: bool = False,
    af: bool = True,
    cont: bool = False,
    dbm: bool = False,
    poindex: int = 0,
) -> int:
    """A block (level 1-2) or page (level 3) descriptor with inner-shareable normal memory."""
    if level not in (1, 2, 3):
        raise ValueError(f"no leaf descriptors at level {level} with a 4K granule")
    v = (pa & BLOCK_OA_MASK[level]) | VALID | SH_INNER | ((attr & 7) << ATTRINDX_SHIFT)
    if level == 3:
        v |= TYPE
    for flag, bit in (
        (user, AP_USER),
        (rdonly, AP_RDONLY),
        (pxn, PXN),
        (uxn, UXN),
        (ng, NG),
        (af, AF),
        (cont, CONT),
        (dbm, DBM),
    ):
        if flag:
            v |= bit
    return set_po_index(v, poindex)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A decoded descriptor at a given level: every architectural field by name."""

    level: int
    kind: Kind
    raw: int
    output_address: int
    attr_index: int = 0
    ap: int = 0
    sh: int = 0
    af: bool = False
    ng: bool = False
    dbm: bool = False
    contiguous: bool = False
    pxn: bool = False
    uxn: bool = False
    gp: bool = False
    ns: bool = False
    po_index: int = 0
    sw_dirty: bool = False
    sw_special: bool = False
    pxn_table: bool = False
    uxn_table: bool = False
    ap_table: int = 0
    ns_table: bool = False

    @classmethod
    def decode(cls, value: int, level: int) -> Descriptor:
        if level not in LEVEL_SHIFT:
            raise ValueError(f"no level {level} with a 4K granule and 48-bit VA")
        k = kind(value, level)
        if k is Kind.TABLE:
            return cls(
                level=level,
                kind=k,
                raw=value,
                output_address=value & OA_MASK,
                pxn_table=bool(value & PXN_TABLE),
                uxn_table=bool(value & UXN_TABLE),
                ap_table=(value >> 61) & 3,
                ns_table=bool(value & NS_TABLE),
            )
        return cls(
            level=level,
            kind=k,
            raw=value,
            output_address=value & BLOCK_OA_MASK[level] if level else value & OA_MASK,
            attr_index=(value & ATTRINDX_MASK) >> ATTRINDX_SHIFT,
            ap=(value & AP_MASK) >> AP_SHIFT,
            sh=(value & SH_MASK) >> SH_SHIFT,
            af=bool(value & AF),
            ng=bool(value & NG),
            dbm=bool(value & DBM),
            contiguous=bool(value & CONT),
            pxn=bool(value & PXN),
            uxn=bool(value & UXN),
            gp=bool(value & GP),
            ns=bool(value & NS),
            po_index=po_index(value),
            sw_dirty=bool(value & SW_DIRTY),
            sw_special=bool(value & SW_SPECIAL),
        )

    def encode(self) -> int:
        """Rebuild the raw value from the fields (bits the view does not name are kept).

        Bits[1:0] follow ``kind``: a page or table is 0b11, a block or reserved
        encoding 0b01; an invalid descriptor clears bit 0 and keeps bit 1 from ``raw``.
        """
        if self.kind is Kind.TABLE:
            named = OA_MASK | PXN_TABLE | UXN_TABLE | (3 << 61) | NS_TABLE | TYPE | VALID
            v = (self.output_address & OA_MASK) | TYPE | VALID
            v |= (PXN_TABLE if self.pxn_table else 0) | (UXN_TABLE if self.uxn_table else 0)
            v |= (self.ap_table & 3) << 61 | (NS_TABLE if self.ns_table else 0)
            return v | (self.raw & ~named)
        named = (
            VALID
            | TYPE
            | ATTRINDX_MASK
            | NS
            | AP_MASK
            | SH_MASK
            | AF
            | NG
            | GP
            | DBM
            | CONT
            | PXN
            | UXN
            | SW_DIRTY
            | SW_SPECIAL
            | POINDEX_MASK
            | BLOCK_OA_MASK[self.level or 3]
        )
        v = self.raw & ~named
        v |= _kind_bits(self.kind, self.raw)
        v |= self.output_address & (BLOCK_OA_MASK[self.level] if self.level else OA_MASK)
        v |= (self.attr_index & 7) << ATTRINDX_SHIFT | (self.ap & 3) << AP_SHIFT
        v |= (self.sh & 3) << SH_SHIFT
        for flag, bit in (
            (self.af, AF),
            (self.ng, NG),
            (self.dbm, DBM),
            (self.contiguous, CONT),
            (self.pxn, PXN),
            (self.uxn, UXN),
            (self.gp, GP),
            (self.ns, NS),
            (self.sw_dirty, SW_DIRTY),
            (self.sw_special, SW_SPECIAL),
        ):
            if flag:
                v |= bit
        return set_po_index(v, self.po_index)

    @property
    def size(self) -> int:
        """Bytes mapped by this leaf, or by the contiguous run it belongs to."""
        n = level_size(self.level)
        return n * CONT_ENTRIES if self.contiguous and self.level in (2, 3) else n

    def describe(self) -> dict[str, object]:
        """Every field in words, for ``kpsim decode`` (``rows`` lays them out)."""
        name = LEVEL_NAME[self.level]
        out: dict[str, object] = {
            "raw": f"{self.raw:#018x}",
            "level": self.level,
            "table": name,
            "kind": self.kind.name.lower(),
            "valid": bool(self.raw & VALID),
        }
        if self.kind in (Kind.INVALID, Kind.RESERVED):
            what = "not valid" if self.kind is Kind.INVALID else "reserved encoding at this level"
            out["note"] = (
                f"{what}: an access faults (level {self.level} translation fault); "
                "the MMU ignores the other bits"
            )
            return out
        out["output_address"] = f"{self.output_address:#x}"
        if self.kind is Kind.TABLE:
            out.update(
                next_level=LEVEL_NAME[self.level + 1],
                pxn_table=self.pxn_table,
                uxn_table=self.uxn_table,
                ap_table=self.ap_table,
                ap_table_effect=AP_TABLE_EFFECT[self.ap_table],
                ns_table=self.ns_table,
            )
            return out
        el1, el0 = base_perms(self.raw)
        mapped = level_size(self.level)
        out.update(
            maps=_size_word(mapped),
            contiguous=self.contiguous,
            contiguous_run=_size_word(mapped * CONT_ENTRIES) if self.contiguous else None,
            attr_index=self.attr_index,
            memory_type=_memattr_name(self.attr_index),
            ns=self.ns,
            ap=self.ap,
            el1_access=perm_str(el1),
            el0_access=perm_str(el0),
            shareability=_SHAREABILITY[self.sh],
            af=self.af,
            ng=self.ng,
            dbm=self.dbm,
            pxn=self.pxn,
            uxn=self.uxn,
            gp=self.gp,
            po_index=self.po_index,
            pkey=self.po_index,
            sw_dirty=self.sw_dirty,
            sw_special=self.sw_special,
        )
        return out

    def rows(self) -> list[tuple[str, str, str]]:
        """(bits, field, meaning) for every field, as ``kpsim decode`` prints them."""
        words = self.describe()
        out = [("63:0", "raw", str(words["raw"]))]
        out.append(("1:0", "type", _kind_words(self)))
        if self.kind in (Kind.INVALID, Kind.RESERVED):
            return [*out, ("", "note", str(words["note"]))]
        if self.kind is Kind.TABLE:
            out.append(
                ("47:12", "next table", f"{words['output_address']} ({words['next_level']})")
            )
            rows = _TABLE_ROWS
        else:
            oa_bits = f"47:{LEVEL_SHIFT[self.level]}"
            out.append((oa_bits, "output address", f"{words['output_address']}"))
            rows = _LEAF_ROWS
        for key, bits, field, yes, no in rows:
            value = words[key]
            words["value"] = value
            text = (yes if value or not isinstance(value, bool) else no).format(**words)
            out.append((bits, field, text))
        return out


# APTable[1:0] (Arm ARM D8.4.1.2): what a table descriptor removes from the leaves below.
AP_TABLE_EFFECT: Final = (
    "no effect",
    "no EL0 data access below",
    "no write access below",
    "no write access and no EL0 data access below",
)

_SHAREABILITY: Final = ("non-shareable", "reserved", "outer shareable", "inner shareable")

# describe() key, bits, field name, words when set (a format of describe()'s words,
# ``value`` being the key's own), words when clear (booleans only).
_Row = tuple[str, str, str, str, str]
_TABLE_ROWS: Final[tuple[_Row, ...]] = (
    ("pxn_table", "59", "PXNTable", "yes: nothing below is executable at EL1", "no"),
    ("uxn_table", "60", "UXNTable", "yes: nothing below is executable at EL0", "no"),
    ("ap_table", "62:61", "APTable", "{value:#04b}: {ap_table_effect}", ""),
    ("ns_table", "63", "NSTable", "yes: next level is non-secure", "no"),
)
_LEAF_ROWS: Final[tuple[_Row, ...]] = (
    ("attr_index", "4:2", "AttrIndx", "{value} ({memory_type})", ""),
    ("ns", "5", "NS", "yes: non-secure output address", "no"),
    (
        "ap",
        "7:6",
        "AP[2:1]",
        "{value:#04b}: EL1 {el1_access}, EL0 {el0_access} (base, before the overlay)",
        "",
    ),
    ("shareability", "9:8", "SH", "{value}", ""),
    ("af", "10", "AF", "yes: accessed", "no: the first access faults (access flag fault)"),
    ("ng", "11", "nG", "yes: not global, tagged with the ASID", "no: global"),
    ("gp", "50", "GP", "yes: BTI guarded page", "no"),
    ("dbm", "51", "DBM", "yes: dirty bit modifier (Linux PTE_WRITE)", "no"),
    ("contiguous", "52", "Contiguous", "yes: one of 16 entries mapping {contiguous_run}", "no"),
    ("pxn", "53", "PXN", "yes: not executable at EL1", "no"),
    ("uxn", "54", "UXN", "yes: not executable at EL0", "no"),
    ("sw_dirty", "55", "software", "yes: Linux PTE_DIRTY", "no: Linux PTE_DIRTY clear"),
    ("sw_special", "56", "software", "yes: Linux PTE_SPECIAL", "no: Linux PTE_SPECIAL clear"),
    ("po_index", "62:60", "POIndex", "{value}: pkey {value}, POR_ELx field {value} applies", ""),
)


def _kind_words(desc: Descriptor) -> str:
    size = f", maps {_size_word(level_size(desc.level))}" if is_leaf(desc.raw, desc.level) else ""
    low = desc.raw & 3
    return f"{low:#04b}: {desc.kind.name.lower()} descriptor at level {desc.level}{size}"


def _kind_bits(k: Kind, raw: int) -> int:
    """Bits[1:0] that make a descriptor of kind ``k`` (see ``kind``)."""
    if k is Kind.PAGE or k is Kind.TABLE:
        return VALID | TYPE
    if k is Kind.INVALID:
        return raw & TYPE
    return VALID


def _memattr_name(idx: int) -> str:
    try:
        return f"MT_{MemAttr(idx).name}"
    except ValueError:
        return f"MAIR slot {idx} (unused by Linux)"


def _size_word(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            return f"{n >> shift}{unit}"
    return str(n)


def perm_str(p: int) -> str:
    """``rwx``-style string of a permission in the POE encoding."""
    if p & 0x8:
        return "---"
    return ("r" if p & 1 else "-") + ("w" if p & 4 else "-") + ("x" if p & 2 else "-")


def parse_level(name: str) -> int:
    try:
        return NAME_LEVEL[name.lower()]
    except KeyError:
        raise InputError(f"unknown table level {name!r} (use pgd, pud, pmd or pte)") from None
