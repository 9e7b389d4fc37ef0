"""IA32_PKRS (PKS, supervisor pages) and PKRU (PKU, user pages): protection-key rights.

Intel SDM vol. 3A 4.6.2: both registers hold 16 two-bit fields; key ``i`` has AD
(access disable) in bit 2i and WD (write disable) in bit 2i+1. Linux names them in
``arch/x86/include/asm/pkru.h`` (``PKR_AD_BIT``, ``PKR_WD_BIT``, ``PKR_BITS_PER_PKEY``)
and IA32_PKRS is ``MSR_IA32_PKRS`` (0x6e1) in ``arch/x86/include/asm/msr-index.h``,
written with WRMSR (Ira Weiny's PKS series: ``pks_write_pkrs``). Bits 63:32 of
IA32_PKRS are reserved: a WRMSR setting them raises #GP.
"""

from __future__ import annotations

from kpsim.errors import InputError

MSR_IA32_PKRS = 0x6E1
MSR_EFER = 0xC0000080
PKR_AD_BIT = 0x1
PKR_WD_BIT = 0x2
PKR_BITS_PER_PKEY = 2
NR_PKEYS = 16
PKR_VALID_MASK = (1 << 32) - 1


def pkr_shift(key: int) -> int:
    if not 0 <= key < NR_PKEYS:
        raise InputError(f"protection key {key} out of range 0-{NR_PKEYS - 1}")
    return key * PKR_BITS_PER_PKEY


def access_disabled(pkr: int, key: int) -> bool:
    return bool((pkr >> pkr_shift(key)) & PKR_AD_BIT)


def write_disabled(pkr: int, key: int) -> bool:
    return bool((pkr >> pkr_shift(key)) & PKR_WD_BIT)


def set_key(pkr: int, key: int, *, ad: bool = False, wd: bool = False) -> int:
    """``pkr`` with key ``key``'s field replaced by AD/WD."""
    s = pkr_shift(key)
    field = (PKR_AD_BIT if ad else 0) | (PKR_WD_BIT if wd else 0)
    return (pkr & ~(3 << s)) | (field << s)


def key_words(pkr: int, key: int) -> str:
    ad, wd = access_disabled(pkr, key), write_disabled(pkr, key)
    if ad:
        return "no data access (AD)" + (", WD" if wd else "")
    if wd:
        return "read only (WD)"
    return "read/write"


def decode_pkr(value: int) -> list[dict[str, object]]:
    """Each key's AD/WD bits and rights, for ``kpsim decode pkrs``."""
    return [
        {
            "pkey": k,
            "ad": access_disabled(value, k),
            "wd": write_disabled(value, k),
            "access": key_words(value, k),
        }
        for k in range(NR_PKEYS)
    ]


def pkr_rows(value: int) -> list[tuple[str, str, str]]:
    rows = [(f"{2 * k + 1}:{2 * k}", f"key {k}", key_words(value, k)) for k in range(NR_PKEYS)]
    if value >> 32:
        rows.append(("63:32", "reserved", f"{value >> 32:#x}: must be 0 (WRMSR raises #GP)"))
    return rows
