"""POR_ELx: the permission overlay register layout and Linux's helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpsim.errors import InputError
from kpsim.hw.arm64 import por as p

U64 = st.integers(0, (1 << 64) - 1)


def test_poe_encodings_match_the_spec():
    """NONE=0, R=1, X=2, RX=3, W=4, RW=5, WX=6, RWX=7; POE_MASK=0xf; 8 usable pkeys."""
    assert (p.POE_NONE, p.POE_R, p.POE_X, p.POE_RX) == (0, 1, 2, 3)
    assert (p.POE_W, p.POE_RW, p.POE_WX, p.POE_RWX) == (4, 5, 6, 7)
    assert p.POE_MASK == 0xF
    assert p.ARCH_MAX_PKEY == 8


@pytest.mark.parametrize(("pkey", "shift"), [(0, 0), (1, 4), (7, 28), (15, 60)])
def test_pkey_field_position(pkey, shift):
    """pkey i lives in bits [4i+3:4i]."""
    assert p.por_elx_perm_shift(pkey) == shift
    assert p.por_elx_perm_get(0xF << shift, pkey) == 0xF


@given(U64, st.integers(0, 15), st.integers(0, 15))
@settings(max_examples=100)
def test_set_pkey_perms_changes_one_field_only(por, pkey, perms):
    """por_elx_set_pkey_perms rewrites one field and leaves the other fifteen alone."""
    new = p.por_elx_set_pkey_perms(por, pkey, perms)
    assert p.por_elx_perm_get(new, pkey) == perms
    for other in range(16):
        if other != pkey:
            assert p.por_elx_perm_get(new, other) == p.por_elx_perm_get(por, other)


@pytest.mark.parametrize(
    ("por", "pkey", "r", "w", "x"),
    [
        (0x17, 0, True, True, True),
        (0x17, 1, True, False, False),
        (0x57, 1, True, True, False),
        (0x17, 2, False, False, False),
        (0x27, 1, False, False, True),
        (0x87, 1, False, False, False),  # bit 3 set: no access
        (0xF7, 1, False, False, False),
    ],
)
def test_allows_helpers(por, pkey, r, w, x):
    """por_elx_allows_read/write/exec read one field; bit 3 set grants nothing."""
    assert p.por_elx_allows_read(por, pkey) is r
    assert p.por_elx_allows_write(por, pkey) is w
    assert p.por_elx_allows_exec(por, pkey) is x


def test_overlay_table_has_eight_entries_and_drops_reserved_values():
    """overlay_table lists the rights of POIndex 0-7; fields 8-15 are unreachable."""
    assert p.overlay_table(0xF000_0000_8765_4317) == (7, 1, 3, 4, 5, 6, 7, 0)


@pytest.mark.parametrize("pkey", [-1, 16])
def test_out_of_range_pkey_is_an_input_error(pkey):
    """A pkey outside 0..15 is rejected with an InputError."""
    with pytest.raises(InputError, match="out of range"):
        p.por_elx_perm_get(0, pkey)
    with pytest.raises(InputError):
        p.por_elx_set_pkey_perms(0, pkey, 7)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0x7, [("RWX", "rwx")] + [("NONE", "---")] * 7),
        (0x17, [("RWX", "rwx"), ("R", "r--")] + [("NONE", "---")] * 6),
        (0x57, [("RWX", "rwx"), ("RW", "rw-")] + [("NONE", "---")] * 6),
        (0x117, [("RWX", "rwx"), ("R", "r--"), ("R", "r--")] + [("NONE", "---")] * 5),
    ],
)
def test_decode_por_values_used_by_the_series(value, expected):
    """The series' POR values decode to the pkey rights the spec lists."""
    rows = p.decode_por(value)
    assert [(r["name"], r["access"]) for r in rows] == expected
    assert [r["pkey"] for r in rows] == list(range(8))


def test_decode_por_shows_nonzero_unreachable_fields():
    """Fields 8-15 appear only when non-zero, marked unreachable."""
    rows = p.decode_por(0x3 << 40 | 0x8)
    assert [r["pkey"] for r in rows] == [*range(8), 10]
    assert rows[-1]["reachable"] is False
    assert rows[0]["name"] == "0x8 (bit 3 set: no access)"
