"""``kpsim decode WHAT VALUE``: a page-table entry, ESR or POR value in words.

The words come from the hardware model (``Descriptor.describe``/``rows``,
``decode_esr``/``esr_rows``, ``decode_por``/``por_rows`` in ``kpsim.hw.arm64``);
this module only parses the arguments and lays the rows out.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from kpsim.cli.arch_opts import add_arch_option
from kpsim.cli.common import add_json, emit_json
from kpsim.errors import InputError
from kpsim.hw.arm64.descriptors import NAME_LEVEL, Descriptor
from kpsim.hw.arm64.esr import decode_esr, esr_rows
from kpsim.hw.arm64.por import ARCH_MAX_PKEY, decode_por, por_rows
from kpsim.hw.x86 import pte as x86pte
from kpsim.hw.x86.fault import decode_pf, pf_rows, pf_summary
from kpsim.hw.x86.pkeys import decode_pkr, pkr_rows
from kpsim.units import parse_u64

# p4d is folded into pgd with 4 levels: an arm64 oops prints the same value for both.
ALIASES = {
    "p4d": "pgd",
    "esr_el1": "esr",
    "por_el1": "por",
    "por_el0": "por",
    "ia32_pkrs": "pkrs",
    "pf": "pf-error",
    "error_code": "pf-error",
}
CHOICES = (
    "pte, pmd, pud, pgd, esr or por (arm64); "
    "x86-pte, x86-pde, x86-pdpte, x86-pml4e, pkrs, pkru or pf-error (x86)"
)
#: x86 kinds: an entry at a level of x86-64's 4-level paging, PKRS/PKRU, a #PF error code.
X86_LEVEL = {"x86-pte": 1, "x86-pde": 2, "x86-pdpte": 3, "x86-pml4e": 4}
X86_OTHER = ("pkrs", "pkru", "pf-error")
#: ``--arch x86``: Linux's level names on x86-64 (pgd is the PML4 with 4-level paging,
#: p4d folded into it) and what arm64's registers are there instead
X86_NAMES = {"pte": "x86-pte", "pmd": "x86-pde", "pud": "x86-pdpte", "pgd": "x86-pml4e"}
X86_INSTEAD = {"esr": "pf-error (x86 reports a #PF error code)", "por": "pkrs or pkru"}
DESCRIPTION = """\
Decode a value from a crash report, a page-table dump or a register read, and
print every field in words.

WHAT is pte, pmd, pud or pgd (a stage-1 descriptor at level 3, 2, 1 or 0 of arm64's
4-level tables with 4K pages; p4d is folded into pgd), esr (ESR_EL1), or por
(POR_EL1 or POR_EL0). VALUE is hex (0x..., or the bare 16 digits an oops prints),
decimal, or binary (0b...).

Or paste a crash report: `kpsim decode 'TEXT'` with one argument holding
`ESR = 0x...`, `pgd=... pud=... pmd=... pte=...` (the show_pte line) or `POR_EL1 =
...`, or `kpsim decode -` to read the text from stdin: every value found is decoded,
in order (p4d= is skipped when it repeats pgd=, as arm64's folded p4d does).

x86-64: x86-pte, x86-pde, x86-pdpte or x86-pml4e (an entry of 4-level paging: PT,
PD, PDPT, PML4), pkrs or pkru (IA32_PKRS / PKRU: AD and WD of each of the 16
protection keys), pf-error (a #PF error code, as an x86 oops prints it). With --arch
x86, pte, pmd, pud and pgd (p4d) are Linux's names for those four on x86-64. An x86
oops pasted as text is decoded too: `#PF: error_code(0x0003)` (show_fault_oops), the
`PGD 1234067 P4D 1234067 PUD ... PMD ... PTE ...` line (dump_pagetable) and `PKRU:
55555554` / `PKRS: ...`.
"""
EPILOG = """\
examples:
  kpsim decode pte 0x10e80008ffbbb707   a linear-map PTE mapping a page table: pkey 1
  kpsim decode esr 0x000000409600004f   a write blocked by the permission overlay
  kpsim decode por 0x57                 pkey 0 RWX, pkey 1 RW (KPKEYS_CTX_PGTABLES)
  kpsim decode 'ESR = 0x000000409600004f'
  dmesg | kpsim decode -                every ESR and page-table entry of the oops
  kpsim decode x86-pte 0x8800000101234063   x86 PTE: NX, pkey 1, dirty, writable
  kpsim decode pkrs 0x8                 IA32_PKRS: pkey 1 write-disabled
  kpsim decode pf-error 0x23            supervisor write blocked by a protection key
  kpsim decode --arch x86 pmd 0x80000001002000e3   an x86 PMD: a 2 MiB page
  kpsim decode '#PF: error_code(0x0023) - protection keys violation'
"""
#: ``ESR = 0x..`` (mem_abort_decode), ``pgd=%016llx`` ... (show_pte), ``POR_EL1 = ...``
#: and x86's: ``#PF: error_code(0x%04lx)`` (show_fault_oops), ``PGD %lx P4D %lx PUD
#: %lx PMD %lx PTE %lx`` (dump_pagetable, upper case, no ``=``), ``PKRU: %08x``
#: (__show_regs) or ``PKRS: ...``
_SPLAT = re.compile(
    r"\b(?:(?P<esr>(?i:ESR(?:_EL1)?))\s*[=:]\s*(?P<esrv>(?:0x)?[0-9a-fA-F]+)"
    r"|(?P<por>(?i:POR(?:_EL[01])?))\s*[=:]\s*(?P<porv>(?:0x)?[0-9a-fA-F]+)"
    r"|(?P<lvl>(?i:pgd|p4d|pud|pmd|pte))=(?P<lvlv>(?:0x)?[0-9a-fA-F]+))\b"
    r"|error_code\((?P<pfv>0x[0-9a-fA-F]+)\)"
    r"|\b(?P<pkr>PKR[US]):\s*(?P<pkrv>(?:0x)?[0-9a-fA-F]+)\b"
    r"|\b(?P<x86lvl>PGD|P4D|PUD|PMD|PTE) (?P<x86lvlv>[0-9a-f]+)\b"
)
_BARE_HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")

Rows = list[tuple[str, str, str]]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "decode",
        help="decode a page-table entry, ESR or POR value (e.g. from a crash report)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "what",
        metavar="WHAT",
        help=f"what the value is: {CHOICES}; or crash-report TEXT; or - (TEXT on stdin)",
    )
    p.add_argument(
        "value",
        nargs="?",
        metavar="VALUE",
        help="the value: 0x..., 16 bare hex digits, decimal",
    )
    add_arch_option(p)
    add_json(p)
    p.set_defaults(func=run, usage_error=p.error)


def run(args: argparse.Namespace) -> int:
    if args.value is None and (args.what == "-" or _SPLAT.search(args.what)):
        text = sys.stdin.read() if args.what == "-" else args.what
        return _splat(text, args.json)
    what = register_name(args.what, args.arch)
    if args.value is None:  # argparse's own message and exit status for a missing VALUE
        args.usage_error("the following arguments are required: VALUE")
    title, rows, doc = decode_value(what, parse_value(args.value, what))
    if args.json:
        emit_json(doc)
    else:
        _print(title, rows, str(doc["summary"]))
    return 0


def decode_value(what: str, value: int) -> tuple[str, Rows, dict[str, object]]:
    """Title, rows and words for ``value`` as register ``what`` (pte... esr, por)."""
    if what == "esr":
        return _esr(value)
    if what == "por":
        return _por(value)
    if what in X86_LEVEL:
        return _x86_entry(what, value)
    if what in ("pkrs", "pkru"):
        return _pkr(what, value)
    if what == "pf-error":
        return _pf_error(value)
    return _descriptor(what, value)


def splat_values(text: str) -> list[tuple[str, int]]:
    """The (register, value) pairs of a pasted crash report, in order; ``p4d=`` is left
    out when it repeats the ``pgd=`` before it (p4d is folded into pgd on arm64)."""
    out: list[tuple[str, int]] = []
    for m in _SPLAT.finditer(text):
        folded = False
        if m.group("esr"):
            what, raw = "esr", m.group("esrv")
        elif m.group("por"):
            what, raw = "por", m.group("porv")
        elif m.group("pfv"):
            what, raw = "pf-error", m.group("pfv")
        elif m.group("pkr"):
            what, raw = m.group("pkr").lower(), m.group("pkrv")
        elif m.group("x86lvl"):
            name = m.group("x86lvl").lower()
            what, raw = X86_NAMES["pgd" if name == "p4d" else name], m.group("x86lvlv")
            folded = name == "p4d"
        else:
            what, raw = register_name(m.group("lvl")), m.group("lvlv")
            folded = m.group("lvl").lower() == "p4d"
        value = parse_u64(raw if raw.lower().startswith("0x") else f"0x{raw}", what=what)
        if folded and out and out[-1] == (what, value):
            continue
        out.append((what, value))
    return out


def _splat(text: str, as_json: bool) -> int:
    values = splat_values(text)
    if not values:
        raise InputError(
            "no value found in the text: expected ESR = 0x..., pgd=/pud=/pmd=/pte=... "
            "(show_pte) or POR_EL1 = 0x... (arm64); #PF: error_code(0x...), PGD ... PTE ... "
            "(dump_pagetable), PKRU: or PKRS: (x86)"
        )
    docs = [decode_value(what, value) for what, value in values]
    if as_json:
        emit_json({"values": [doc for _t, _r, doc in docs]})
    else:
        sys.stdout.write("\n".join(rows_text(t, r, str(d["summary"])) for t, r, d in docs))
    return 0


def register_name(text: str, arch: str | None = None) -> str:
    """``pte``/``pmd``/``pud``/``pgd``/``esr``/``por`` (case-insensitive, ``_el1`` aliases);
    with ``arch`` x86, Linux's level names mean x86-64's entries (:data:`X86_NAMES`)."""
    name = text.strip().lower()
    name = ALIASES.get(name, name)
    if name not in NAME_LEVEL and name not in ("esr", "por", *X86_LEVEL, *X86_OTHER):
        raise InputError(f"unknown register {text!r}: use {CHOICES}")
    if arch == "x86":
        if name in X86_INSTEAD:
            raise InputError(f"--arch x86: {name} is arm64's; on x86 use {X86_INSTEAD[name]}")
        return X86_NAMES.get(name, name)
    return name


def parse_value(text: str, what: str) -> int:
    """A 64-bit value; 16 bare hex digits are hex, as the kernel prints %016llx."""
    s = text.strip()
    if _BARE_HEX16.match(s):
        return int(s, 16)
    return parse_u64(s, what=f"{what} value")


def descriptor(what: str, value: int) -> tuple[str, Rows, dict[str, object]]:
    """Title, rows and words of a descriptor at level ``what`` (pte, pmd, pud, pgd)."""
    return _descriptor(what, value)


def _descriptor(what: str, value: int) -> tuple[str, Rows, dict[str, object]]:
    desc = Descriptor.decode(value, NAME_LEVEL[what])
    words = desc.describe()
    if "note" in words:
        summary = str(words["note"])
    elif words["kind"] == "table":
        nxt = words["next_level"]
        summary = f"table descriptor: the next level ({nxt}) is at {words['output_address']}"
    else:
        summary = (
            f"{words['kind']} mapping {words['maps']} at {words['output_address']}; "
            f"base permissions EL1 {words['el1_access']}, EL0 {words['el0_access']}; "
            f"pkey {words['pkey']}"
        )
    title = f"{what} {value:#018x} (level {desc.level} descriptor)"
    return title, desc.rows(), {"register": what, **words, "summary": summary}


def _esr(value: int) -> tuple[str, Rows, dict[str, object]]:
    words = decode_esr(value)
    if "fault" in words:
        summary = f"{words['exception_class']}: {words['access']}, {words['fault']}"
        if words["overlay"]:
            summary += ", ISS2.Overlay set (the permission overlay denied it)"
    else:
        summary = f"{words['ec_name']}: {words['exception_class']}"
    return (
        f"ESR_EL1 {value:#018x}",
        esr_rows(value),
        {"register": "esr", **words, "summary": summary},
    )


def _por(value: int) -> tuple[str, Rows, dict[str, object]]:
    pkeys = decode_por(value)
    granted = [
        f"pkey {r['pkey']} {r['name']}" for r in pkeys if r["access"] != "---" and r["reachable"]
    ]
    summary = ", ".join(granted) if granted else f"no access for any of the {ARCH_MAX_PKEY} pkeys"
    doc: dict[str, object] = {"register": "por", "raw": f"{value:#018x}", "pkeys": pkeys}
    doc["summary"] = summary
    return f"POR_ELx {value:#018x}", por_rows(value), doc


def _x86_entry(what: str, value: int) -> tuple[str, Rows, dict[str, object]]:
    level = X86_LEVEL[what]
    words = x86pte.describe(value, level)
    if not words["present"]:
        summary = "not present: any access faults (#PF with P=0)"
    elif words["kind"] == "table":
        summary = (
            f"points to the next table at {words['address']}; "
            f"{'writable' if words['writable'] else 'read-only'}, "
            f"{'user' if words['user'] else 'supervisor'}"
            f"{', no execute' if words['nx'] else ''} below it"
        )
    else:
        summary = (
            f"maps a {words['size']} page at {words['address']}: "
            f"{'writable' if words['writable'] else 'read-only'}, "
            f"{'user' if words['user'] else 'supervisor'}"
            f"{', no execute' if words['nx'] else ''}"
            f"{', global' if words['global'] else ''}; pkey {words['pkey']}"
        )
    name = x86pte.LEVEL_NAME[level].upper()
    title = f"{what} {value:#018x} (x86-64 {name}, level {level} of 4)"
    return title, x86pte.entry_rows(value, level), {"register": what, **words, "summary": summary}


def _pkr(what: str, value: int) -> tuple[str, Rows, dict[str, object]]:
    if value >> 32:
        raise InputError(f"{what} value {value:#x}: bits 63:32 are reserved (WRMSR would #GP)")
    keys = decode_pkr(value)
    limited = [f"pkey {k['pkey']} {k['access']}" for k in keys if k["ad"] or k["wd"]]
    summary = ", ".join(limited) if limited else "every pkey read/write"
    name = "IA32_PKRS" if what == "pkrs" else "PKRU"
    doc: dict[str, object] = {"register": what, "raw": f"{value:#010x}", "pkeys": keys}
    doc["summary"] = summary
    return f"{name} {value:#010x}", pkr_rows(value), doc


def _pf_error(value: int) -> tuple[str, Rows, dict[str, object]]:
    if value >> 32:
        raise InputError(f"pf-error value {value:#x}: a #PF error code is 32 bits")
    summary = pf_summary(value)
    doc: dict[str, object] = {"register": "pf-error", **decode_pf(value), "summary": summary}
    return f"#PF error code {value:#x}", pf_rows(value), doc


def rows_text(title: str, rows: Sequence[tuple[str, str, str]], summary: str) -> str:
    """The title, a bits/field/meaning table and the summary, as ``decode`` prints."""
    wbits = max(len("bits"), *(len(r[0]) for r in rows))
    wfield = max(len("field"), *(len(r[1]) for r in rows))
    out = [title, f"  {'bits':<{wbits}}  {'field':<{wfield}}  meaning"]
    out += [f"  {b:<{wbits}}  {f:<{wfield}}  {m}".rstrip() for b, f, m in rows]
    out.append(f"summary: {summary}")
    return "\n".join(out) + "\n"


def _print(title: str, rows: Sequence[tuple[str, str, str]], summary: str) -> None:
    sys.stdout.write(rows_text(title, rows, summary))
