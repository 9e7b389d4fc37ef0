"""VMSAv8-64 stage-1 descriptors: bit positions, decode/encode round trips, words."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpsim.errors import InputError
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.descriptors import Descriptor, Kind

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
LEVELS = st.sampled_from([0, 1, 2, 3])
BOOL = st.booleans()

# Bit positions straight from the Arm ARM (DDI 0487, D8.3 "Translation table
# descriptor formats") and Linux arch/arm64/include/asm/pgtable-hwdef.h.
ARM_ARM_LEAF_BITS = {
    "valid": 1 << 0,
    "page": 1 << 1,  # descriptor bit[1]: 1 = page at level 3, 0 = block at levels 1-2
    "ns": 1 << 5,
    "ap1_user": 1 << 6,  # AP[1]: EL0 access
    "ap2_rdonly": 1 << 7,  # AP[2]: read-only
    "sh_inner": 0b11 << 8,
    "af": 1 << 10,
    "ng": 1 << 11,
    "gp": 1 << 50,
    "dbm": 1 << 51,
    "contiguous": 1 << 52,
    "pxn": 1 << 53,
    "uxn": 1 << 54,
    "po_idx_0": 1 << 60,
    "po_idx_1": 1 << 61,
    "po_idx_2": 1 << 62,
}


def test_leaf_bit_constants_match_the_arm_arm():
    """Every named leaf bit sits where the Arm ARM and pgtable-hwdef.h put it."""
    assert ARM_ARM_LEAF_BITS["valid"] == d.VALID
    assert ARM_ARM_LEAF_BITS["page"] == d.TYPE
    assert ARM_ARM_LEAF_BITS["ns"] == d.NS
    assert ARM_ARM_LEAF_BITS["ap1_user"] == d.AP_USER
    assert ARM_ARM_LEAF_BITS["ap2_rdonly"] == d.AP_RDONLY
    assert ARM_ARM_LEAF_BITS["sh_inner"] == d.SH_INNER
    assert ARM_ARM_LEAF_BITS["af"] == d.AF
    assert ARM_ARM_LEAF_BITS["ng"] == d.NG
    assert ARM_ARM_LEAF_BITS["gp"] == d.GP
    assert ARM_ARM_LEAF_BITS["dbm"] == d.DBM
    assert ARM_ARM_LEAF_BITS["contiguous"] == d.CONT
    assert ARM_ARM_LEAF_BITS["pxn"] == d.PXN
    assert ARM_ARM_LEAF_BITS["uxn"] == d.UXN
    assert d.POINDEX_MASK == 0x7 << 60 == 0x7000_0000_0000_0000
    assert d.OA_MASK == 0x0000_FFFF_FFFF_F000


def test_table_bit_constants_match_the_arm_arm():
    """Table descriptor attributes: PXNTable 59, UXNTable 60, APTable 62:61, NSTable 63."""
    assert d.PXN_TABLE == 1 << 59
    assert d.UXN_TABLE == 1 << 60
    assert d.AP_TABLE_NO_EL0 == 1 << 61
    assert d.AP_TABLE_RDONLY == 1 << 62
    assert d.NS_TABLE == 1 << 63


def test_leaf_desc_default_page_is_kernel_rw_no_exec():
    """leaf_desc(pa, 3) = valid page, normal memory, inner shareable, AF, PXN and UXN."""
    pa = 0x8_FFBB_B000
    assert d.leaf_desc(pa, 3) == pa | 0x3 | 0x300 | 0x400 | (1 << 53) | (1 << 54)


@pytest.mark.parametrize(
    ("kw", "bits"),
    [
        ({"user": True}, 1 << 6),
        ({"rdonly": True}, 1 << 7),
        ({"ng": True}, 1 << 11),
        ({"dbm": True}, 1 << 51),
        ({"cont": True}, 1 << 52),
        ({"attr": 4}, 0b100 << 2),
        ({"poindex": 1}, 1 << 60),
        ({"poindex": 5}, (1 << 60) | (1 << 62)),
        ({"poindex": 7}, 0x7 << 60),
    ],
)
def test_leaf_desc_sets_one_field_at_its_bit(kw, bits):
    """Each leaf_desc keyword sets exactly its architectural bits and nothing else."""
    assert d.leaf_desc(0, 3, **kw) ^ d.leaf_desc(0, 3) == bits


@pytest.mark.parametrize(("kw", "bit"), [({"pxn": False}, 1 << 53), ({"uxn": False}, 1 << 54)])
def test_leaf_desc_clears_execute_never_bits(kw, bit):
    """pxn=False / uxn=False clear exactly bit 53 / bit 54."""
    assert d.leaf_desc(0, 3) ^ d.leaf_desc(0, 3, **kw) == bit


def test_leaf_desc_af_false_clears_bit_10():
    """af=False leaves the access flag (bit 10) clear, so the first access faults."""
    assert d.leaf_desc(0, 3) ^ d.leaf_desc(0, 3, af=False) == 1 << 10


@pytest.mark.parametrize(("level", "size"), [(1, 1 << 30), (2, 1 << 21)])
def test_block_descriptors_have_bit1_clear_and_an_aligned_address(level, size):
    """Level-1/2 blocks have bit[1] = 0 and keep only the block-aligned output address."""
    v = d.leaf_desc(0x7234_5678_9000, level)
    assert v & 0b11 == 0b01
    assert v & d.OA_MASK == 0x7234_5678_9000 & ~(size - 1)
    assert d.kind(v, level) is Kind.BLOCK


def test_leaf_desc_rejects_level_0():
    """There are no level-0 blocks with a 4K granule."""
    with pytest.raises(ValueError, match="level 0"):
        d.leaf_desc(0, 0)


def test_table_desc_bits():
    """table_desc = address | 0b11, with PXNTable/UXNTable at bits 59/60 on request."""
    assert d.table_desc(0x4000_3000) == 0x4000_3003
    assert d.table_desc(0x4000_3000, pxn_table=True) == 0x4000_3003 | 1 << 59
    assert d.table_desc(0x4000_3000, uxn_table=True) == 0x4000_3003 | 1 << 60


@pytest.mark.parametrize(
    ("value", "level", "kind"),
    [
        (0x0, 3, Kind.INVALID),
        (0x2, 2, Kind.INVALID),
        (0x3, 0, Kind.TABLE),
        (0x1, 0, Kind.RESERVED),
        (0x1, 1, Kind.BLOCK),
        (0x1, 2, Kind.BLOCK),
        (0x3, 2, Kind.TABLE),
        (0x3, 3, Kind.PAGE),
        (0x1, 3, Kind.RESERVED),
    ],
)
def test_kind_by_level(value, level, kind):
    """bits[1:0] mean table/block/page/reserved depending on the level (Arm ARM D8.3.1)."""
    assert d.kind(value, level) is kind


@given(U64, LEVELS)
@settings(max_examples=300)
def test_decode_encode_round_trip_keeps_every_bit(value, level):
    """decode(v).encode() == v at every level, for any 64-bit value."""
    assert Descriptor.decode(value, level).encode() == value


LEAF_FIELDS = st.fixed_dictionaries(
    {
        "attr_index": st.integers(0, 7),
        "ap": st.integers(0, 3),
        "sh": st.integers(0, 3),
        "af": BOOL,
        "ng": BOOL,
        "dbm": BOOL,
        "contiguous": BOOL,
        "pxn": BOOL,
        "uxn": BOOL,
        "gp": BOOL,
        "ns": BOOL,
        "po_index": st.integers(0, 7),
        "sw_dirty": BOOL,
        "sw_special": BOOL,
    }
)


@given(st.sampled_from([1, 2, 3]), st.integers(0, (1 << 48) - 1), LEAF_FIELDS)
@settings(max_examples=300)
def test_leaf_fields_encode_then_decode(level, oa, fields):
    """Any leaf built from fields encodes to bits that decode back to the same fields."""
    oa &= d.BLOCK_OA_MASK[level]
    kind = Kind.PAGE if level == 3 else Kind.BLOCK
    desc = Descriptor(level=level, kind=kind, raw=0, output_address=oa, **fields)
    value = desc.encode()
    again = Descriptor.decode(value, level)
    assert again.kind is kind
    assert dataclasses.replace(again, raw=0) == desc


TABLE_FIELDS = st.fixed_dictionaries(
    {
        "pxn_table": BOOL,
        "uxn_table": BOOL,
        "ap_table": st.integers(0, 3),
        "ns_table": BOOL,
    }
)


@given(st.sampled_from([0, 1, 2]), st.integers(0, (1 << 48) - 1), TABLE_FIELDS)
@settings(max_examples=200)
def test_table_fields_encode_then_decode(level, oa, fields):
    """Any table descriptor built from fields round-trips through its bits."""
    oa &= d.OA_MASK
    desc = Descriptor(level=level, kind=Kind.TABLE, raw=0, output_address=oa, **fields)
    value = desc.encode()
    assert value & 0b11 == 0b11
    assert dataclasses.replace(Descriptor.decode(value, level), raw=0) == desc


@pytest.mark.parametrize(
    ("kind", "level", "low_bits"),
    [(Kind.PAGE, 3, 0b11), (Kind.BLOCK, 2, 0b01), (Kind.BLOCK, 1, 0b01), (Kind.INVALID, 3, 0b10)],
)
def test_encode_takes_valid_and_type_from_kind(kind, level, low_bits):
    """Changing the kind of a view sets bits[1:0]; invalid clears bit 0 and keeps bit 1."""
    start = Descriptor.decode(d.leaf_desc(0x4000_0000, level), level)
    assert dataclasses.replace(start, kind=kind).encode() & 0b11 == low_bits


@given(U64, st.integers(0, 7))
@settings(max_examples=100)
def test_set_po_index_changes_only_bits_62_60(value, pkey):
    """set_po_index rewrites POIndex and leaves every other bit alone."""
    v = d.set_po_index(value, pkey)
    assert d.po_index(v) == pkey
    assert v & ~d.POINDEX_MASK == value & ~d.POINDEX_MASK


def test_linear_map_pte_from_the_series_has_pkey_1():
    """0x10e80008ffbbb707 (a linear-map PTE mapping a PTP) decodes to POIndex 1."""
    desc = Descriptor.decode(0x10E80008FFBBB707, 3)
    assert desc.kind is Kind.PAGE
    assert desc.po_index == 1
    assert desc.output_address == 0x8_FFBB_B000
    assert (desc.attr_index, desc.ap, desc.sh) == (1, 0, 3)
    assert desc.af and not desc.ng and desc.dbm and desc.pxn and desc.uxn and desc.sw_dirty
    assert not desc.contiguous and not desc.gp and not desc.sw_special
    words = desc.describe()
    assert words["pkey"] == 1
    assert words["el1_access"] == "rw-"
    assert words["el0_access"] == "---"
    assert words["memory_type"] == "MT_NORMAL_TAGGED"
    assert words["shareability"] == "inner shareable"


@pytest.mark.parametrize(
    ("level", "cont", "size"),
    [
        (3, False, 1 << 12),
        (3, True, 1 << 16),
        (2, False, 1 << 21),
        (2, True, 1 << 25),
        (1, False, 1 << 30),
    ],
)
def test_size_of_leaves_and_contiguous_runs(level, cont, size):
    """A leaf maps 4K/2M/1G; the contiguous hint groups 16: 64K at level 3, 32M at level 2."""
    assert Descriptor.decode(d.leaf_desc(0, level, cont=cont), level).size == size


def test_describe_bit_1_of_a_level_3_descriptor_clear_is_reserved():
    """A valid level-3 descriptor with bit[1] clear is a reserved encoding (walks fault)."""
    words = Descriptor.decode(0x1, 3).describe()
    assert words["kind"] == "reserved"
    assert "translation fault" in str(words["note"])


def test_describe_table_names_the_next_level():
    """A pud table descriptor points at a pmd table."""
    words = Descriptor.decode(d.table_desc(0x4000_2000, pxn_table=True), 1).describe()
    assert words["kind"] == "table"
    assert words["next_level"] == "pmd"
    assert words["pxn_table"] is True
    assert words["output_address"] == "0x40002000"


@pytest.mark.parametrize(
    ("ap", "pxn", "uxn", "el1", "el0"),
    [
        (0b00, 1, 1, "rw-", "---"),
        (0b01, 1, 1, "rw-", "rw-"),
        (0b10, 1, 1, "r--", "---"),
        (0b11, 1, 1, "r--", "r--"),
        (0b00, 0, 1, "rwx", "---"),
        (0b01, 0, 0, "rw-", "rwx"),  # writable at EL0: never executable at EL1
        (0b11, 0, 0, "r-x", "r-x"),
        (0b10, 1, 0, "r--", "--x"),  # Linux PAGE_EXECONLY: EL0 execute-only
    ],
)
def test_base_perms_follow_ap_pxn_uxn(ap, pxn, uxn, el1, el0):
    """base_perms reads AP[2:1], PXN and UXN as Arm ARM D8.4.1.2 (direct permissions)."""
    v = d.leaf_desc(0, 3, pxn=bool(pxn), uxn=bool(uxn)) | ap << 6
    p1, p0 = d.base_perms(v)
    assert (d.perm_str(p1), d.perm_str(p0)) == (el1, el0)


@pytest.mark.parametrize(("name", "level"), [("pgd", 0), ("PUD", 1), ("pmd", 2), ("pte", 3)])
def test_parse_level_names(name, level):
    """Linux's table names map to levels 0-3 (arm64, 4 levels, p4d folded)."""
    assert d.parse_level(name) == level


def test_parse_level_rejects_unknown_names():
    """An unknown table name is an InputError naming the valid ones."""
    with pytest.raises(InputError, match="pgd, pud, pmd or pte"):
        d.parse_level("p4d")


def test_decode_rejects_a_level_outside_0_to_3():
    """Descriptor.decode refuses levels that do not exist with a 4K granule."""
    with pytest.raises(ValueError, match="level 4"):
        Descriptor.decode(0, 4)


@pytest.mark.parametrize(
    ("perm", "text"), [(0, "---"), (1, "r--"), (2, "--x"), (5, "rw-"), (7, "rwx"), (0xF, "---")]
)
def test_perm_str(perm, text):
    """perm_str renders R=1, X=2, W=4 as rwx; bit 3 set means nothing."""
    assert d.perm_str(perm) == text
