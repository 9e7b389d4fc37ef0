"""x86 faults as values (DESIGN.md, "Errors"): #PF with CR2 and its error code, #GP.

The page-fault error code follows Intel SDM vol. 3A 4.7 and Linux's
``enum x86_pf_error_code`` (``arch/x86/include/asm/trap_pf.h``): P (bit 0, a
protection violation rather than a not-present page), W/R (1), U/S (2, CPL 3), RSVD (3,
a reserved bit set in a paging-structure entry), I/D (4, an instruction fetch), PK (5,
a protection key), SS (6, a shadow-stack access), HLAT (7), SGX (15), RMP (31).
A fault becomes an exception (:class:`kpsim.errors.AccessFault`) only at the access API.
"""

from __future__ import annotations

from dataclasses import dataclass

PF_PROT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_RSVD = 1 << 3
PF_INSTR = 1 << 4
PF_PK = 1 << 5
PF_SHSTK = 1 << 6
PF_HLAT = 1 << 7
PF_SGX = 1 << 15
PF_RMP = 1 << 31

PF_BITS = (
    (0, "P", PF_PROT, "protection violation on a present page", "page not present"),
    (1, "W/R", PF_WRITE, "write access", "read access"),
    (2, "U/S", PF_USER, "user-mode access (CPL 3)", "supervisor-mode access"),
    (3, "RSVD", PF_RSVD, "reserved bit set in a paging-structure entry", ""),
    (4, "I/D", PF_INSTR, "instruction fetch", ""),
    (5, "PK", PF_PK, "protection key blocked the access (PKRU or IA32_PKRS)", ""),
    (6, "SS", PF_SHSTK, "shadow-stack access", ""),
    (7, "HLAT", PF_HLAT, "HLAT paging", ""),
    (15, "SGX", PF_SGX, "SGX-specific access-control violation", ""),
    (31, "RMP", PF_RMP, "RMP violation (AMD SEV-SNP)", ""),
)
PF_KNOWN = 0
for _b in PF_BITS:
    PF_KNOWN |= _b[2]


@dataclass(frozen=True, slots=True)
class PageFault:
    """#PF (vector 14): CR2 holds ``va``, the error code ``error_code``; ``level`` is
    where the walk stopped (4 PML4 ... 1 PT; 0 for a rights check at the leaf)."""

    va: int
    error_code: int
    level: int = 0

    vector = 14

    @property
    def cr2(self) -> int:
        return self.va

    @property
    def present(self) -> bool:
        return bool(self.error_code & PF_PROT)

    @property
    def pk(self) -> bool:
        return bool(self.error_code & PF_PK)

    def __str__(self) -> str:
        code = self.error_code
        return f"#PF at {self.va:#018x}: {pf_summary(code)} (error code {code:#x})"


@dataclass(frozen=True, slots=True)
class GeneralProtection:
    """#GP(0) (vector 13): a non-canonical address, a reserved register bit, a bad
    INVPCID type. ``reason`` says which."""

    reason: str
    va: int = 0

    vector = 13
    error_code = 0

    def __str__(self) -> str:
        return f"#GP(0): {self.reason}"


X86Fault = PageFault | GeneralProtection


def pf_summary(code: int) -> str:
    """The error code in one phrase, e.g. ``supervisor write, protection key``."""
    who = "user" if code & PF_USER else "supervisor"
    if code & PF_INSTR:
        what = "instruction fetch"
    elif code & PF_SHSTK:
        what = "shadow-stack " + ("write" if code & PF_WRITE else "read")
    else:
        what = "write" if code & PF_WRITE else "read"
    parts = [f"{who} {what}"]
    if not code & PF_PROT:
        parts.append("page not present")
    elif code & PF_RSVD:
        parts.append("reserved bit set in a paging entry")
    elif code & PF_PK:
        parts.append("protection key")
    else:
        parts.append("protection violation")
    if code & PF_SGX:
        parts.append("SGX")
    if code & PF_RMP:
        parts.append("RMP")
    return ", ".join(parts)


def pf_rows(code: int) -> list[tuple[str, str, str]]:
    rows = []
    for bit, name, mask, on, off in PF_BITS:
        if code & mask:
            rows.append((str(bit), name, f"1: {on}"))
        elif off:
            rows.append((str(bit), name, f"0: {off}"))
    rest = code & ~PF_KNOWN
    if rest:
        rows.append(("other", "reserved", f"{rest:#x}: bits no CPU defines"))
    return rows


def decode_pf(code: int) -> dict[str, object]:
    out: dict[str, object] = {
        name.lower().replace("/", "_"): bool(code & m) for _b, name, m, _o, _f in PF_BITS
    }
    out["raw"] = f"{code:#x}"
    return out
