"""Property: the hw/x86 walker and rights check agree with a reference decode written
straight from the SDM's tables (4-14 to 4-20) and the 4.6 / 4.7 prose, bit by bit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86.mmu import Leaf, Paging, access_bits, access_error, walk

MAXPHY = 40
TABLES = {4: 0x1000, 3: 0x2000, 2: 0x3000, 1: 0x4000}
SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}


def bit(v: int, n: int) -> int:
    return (v >> n) & 1


def bits(v: int, hi: int, lo: int) -> int:
    return (v >> lo) & ((1 << (hi - lo + 1)) - 1)


def reference(entries: dict[int, int], va: int, p: Paging, write: bool, fetch: bool, user: bool):
    """('np', level) | ('rsvd', level) | ('ok', pa) | ('prot', pk)."""
    rw = us = 1
    xd = 0
    for level in (4, 3, 2, 1):
        v = entries[level]
        if not bit(v, 0):
            return ("np", level)
        for n in range(MAXPHY, 52):
            if bit(v, n):
                return ("rsvd", level)
        if bit(v, 63) and not p.nxe:
            return ("rsvd", level)
        ps = bit(v, 7)
        if level == 4 and ps:
            return ("rsvd", level)
        if level == 3 and ps and bits(v, 29, 13):
            return ("rsvd", level)
        if level == 2 and ps and bits(v, 20, 13):
            return ("rsvd", level)
        rw &= bit(v, 1)
        us &= bit(v, 2)
        xd |= bit(v, 63)
        if level == 1 or ps:
            break
    page_bits = SHIFT[level]
    base = bits(v, MAXPHY - 1, page_bits) << page_bits
    pa = base | (va & ((1 << page_bits) - 1))
    key = bits(v, 62, 59)
    nx = xd and p.nxe
    # SDM 4.6.1
    if user:
        ok = us and (not write or rw) and (not fetch or not nx)
    elif fetch:
        ok = not (us and p.smep) and not nx
    else:
        ok = not (us and p.smap and not p.ac) and (not write or not p.wp or rw)
    # SDM 4.6.2 / 4.7 PK
    pk = False
    if not fetch:
        if us and p.pke:
            ad, wd = bit(p.pkru, 2 * key), bit(p.pkru, 2 * key + 1)
            pk = bool(ad or (wd and write and (user or p.wp)))
        if not us and p.pks and not user:
            ad, wd = bit(p.pkrs, 2 * key), bit(p.pkrs, 2 * key + 1)
            pk = bool(ad or (wd and write and p.wp))
    if ok and not pk:
        return ("ok", pa)
    return ("prot", pk)


def entry_strategy(level: int) -> st.SearchStrategy[int]:
    """Mostly well-formed entries (present, no reserved address bits, no PS in a PML4E,
    often no XD, so walks reach the rights check); sometimes any 64 bits at all."""
    rsvd_addr = ((1 << 52) - 1) & ~((1 << MAXPHY) - 1)
    low = 0x3FFFE000 if level > 1 else 0
    ps = 1 << 7 if level == 4 else 0

    def tidy(v: int) -> int:
        return (v | 1) & ~rsvd_addr & ~low & ~ps

    anything = st.integers(0, (1 << 64) - 1)
    clean = anything.map(tidy)
    clean_x = anything.map(lambda v: tidy(v) & ~(1 << 63))
    return st.one_of(clean_x, clean_x, clean, anything)


@settings(max_examples=1500, deadline=None)
@given(
    e4=entry_strategy(4),
    e3=entry_strategy(3),
    e2=entry_strategy(2),
    e1=entry_strategy(1),
    va=st.integers(0, (1 << 47) - 1),
    flags=st.lists(st.booleans(), min_size=8, max_size=8),
    pkru=st.integers(0, (1 << 32) - 1),
    pkrs=st.integers(0, (1 << 32) - 1),
    access=st.sampled_from(["read", "write", "fetch"]),
)
def test_walk_matches_reference(e4, e3, e2, e1, va, flags, pkru, pkrs, access) -> None:
    nxe, wp, pke, pks, smep, smap, ac, user = flags
    paging = Paging(
        maxphyaddr=MAXPHY,
        nxe=nxe,
        wp=wp,
        pke=pke,
        pks=pks,
        smep=smep,
        smap=smap,
        pkru=pkru,
        pkrs=pkrs,
        ac=ac,
    )
    entries = {4: e4, 3: e3, 2: e2, 1: e1}
    mem = PhysicalMemory(0, 1 << MAXPHY)
    for level, value in list(entries.items()):
        if level == 4 or (level > 1 and not value >> 7 & 1):
            # a table pointer goes to the next fixed table; a large leaf keeps its bits
            entries[level] = (value & ~(((1 << MAXPHY) - 1) & ~0xFFF)) | TABLES[level - 1]
        mem.write64(TABLES[level] + (((va >> SHIFT[level]) & 0x1FF) << 3), entries[level])
    write, fetch = access == "write", access == "fetch"
    want = reference(entries, va, paging, write, fetch, user)
    code = access_bits(write=write, fetch=fetch, user=user, paging=paging)
    got = walk(mem, TABLES[4], va, paging, code)
    if not isinstance(got, Leaf):
        assert want[0] in ("np", "rsvd"), (want, got)
        assert got.level == want[1]
        assert bool(got.error_code & 8) == (want[0] == "rsvd")
        assert bool(got.error_code & 1) == (want[0] == "rsvd")
        return
    assert want[0] in ("ok", "prot"), (want, got)
    err = access_error(got, write=write, fetch=fetch, user=user, paging=paging, bits=code)
    if want[0] == "ok":
        assert err == 0 and got.pa(va) == want[1]
    else:
        assert err & 1 and bool(err & 0x20) == want[1]
        assert bool(err & 2) == write and bool(err & 4) == user
