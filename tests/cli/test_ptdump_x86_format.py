"""``kpsim ptdump --arch x86`` against a golden derived from arch/x86/mm/dump_pagetables.c.

The expected lines are built here, independently of kpsim.report.ptdump_x86, with the
kernel's formats (``"0x%0*lx-0x%0*lx   "`` with width 16, ``"%9lu%c "`` over the units
``BKMGTPE``, then ``printk_prot``'s columns: ``"USR "``/4 blanks, ``"RW "``/``"ro "``,
``"PWT "``, ``"PCD "``, ``"PSE "``, ``"PAT "``, ``"GLB "``, ``"NX "``/``"x  "``, 30 blanks
when not present, then ``"%s\\n"`` of the level name; ``"---[ %s ]---"`` markers, one
per break, so a marker follows the run that reached it). The layout of a fresh 1 GiB x86
machine is derived from what boot maps: the first 2 MiB in 4K pages (the ISA range),
2M pages for the rest with the kernel's 12 MiB text+rodata alias read-only, the vmemmap's
2M pages, the image's three segments in ``level2_kernel_pgt``, the vmalloc area's
preallocated PUD tables, each hole at the level the pagewalk reports it.
"""

from __future__ import annotations

import itertools
import re

import pytest

from kpsim.cli.main import main

G, M, K, T = 1 << 30, 1 << 20, 1 << 10, 1 << 40
PO = 0xFFFF888000000000  # PAGE_OFFSET
LDT = 0xFFFF880000000000
VMALLOC, VMEMMAP = 0xFFFFC90000000000, 0xFFFFEA0000000000
CEA, ESPFIX = 0xFFFFFE0000000000, 0xFFFFFF0000000000
SKM, MODULES = 0xFFFFFFFF80000000, 0xFFFFFFFFA0000000

# printk_prot's columns in order: (flag, printed when set, printed when clear)
COLUMNS = [
    ("USR", "USR ", "    "),
    ("RW", "RW ", "ro "),
    ("PWT", "PWT ", "    "),
    ("PCD", "PCD ", "    "),
    ("PSE", "PSE ", "    "),
    ("PAT", "PAT ", "    "),
    ("GLB", "GLB ", "    "),
    ("NX", "NX ", "x  "),
]


def kline(start: int, end: int, level: str, flags: set[str] | None = None) -> str:
    """One note_page line; ``flags`` the printk_prot flags that are set, None: not present."""
    delta, unit = (end - start) % (1 << 64), 0
    while not delta & 1023 and unit < 6:
        delta >>= 10
        unit += 1
    s = "0x%0*x-0x%0*x   " % (16, start, 16, end % (1 << 64))  # noqa: UP031 (the kernel's)
    s += "%9d%c " % (delta, "BKMGTPE"[unit])  # noqa: UP031
    if flags is None:
        s += " " * 30
    else:
        s += "".join(on if key in flags else off for key, on, off in COLUMNS)
    return s + "%s" % level  # noqa: UP031


def marker(name: str) -> str:
    return "---[ %s ]---" % name  # noqa: UP031


DIRECT = {"RW", "GLB", "NX"}
GOLDEN_1G = [
    marker("User Space"),
    kline(0, LDT, "pgd"),
    marker("Kernel Space"),
    kline(LDT, PO, "pgd"),
    marker("LDT remap"),
    kline(PO, PO + 2 * M, "pte", DIRECT),  # the ISA range and the rest of the first 2M
    marker("Low Kernel Mapping"),
    kline(PO + 2 * M, PO + 16 * M, "pmd", DIRECT | {"PSE"}),
    kline(PO + 16 * M, PO + 28 * M, "pmd", {"PSE", "GLB", "NX"}),  # text+rodata alias
    kline(PO + 28 * M, PO + G, "pmd", DIRECT | {"PSE"}),
    kline(PO + G, PO + 512 * G, "pud"),
    kline(PO + 512 * G, VMALLOC, "pgd"),
    marker("vmalloc() Area"),
    kline(VMALLOC, VMALLOC + 32 * T, "pud"),  # preallocate_vmalloc_pages' PUD tables
    kline(VMALLOC + 32 * T, VMEMMAP, "pgd"),
    marker("Vmemmap"),
    kline(VMEMMAP, VMEMMAP + 16 * M, "pmd", DIRECT | {"PSE"}),
    kline(VMEMMAP + 16 * M, VMEMMAP + G, "pmd"),
    kline(VMEMMAP + G, VMEMMAP + 512 * G, "pud"),
    kline(VMEMMAP + 512 * G, CEA, "pgd"),
    marker("CPU entry Area"),
    kline(CEA, ESPFIX, "pgd"),
    marker("ESPfix Area"),
    kline(ESPFIX, ESPFIX + 512 * G, "pgd"),
    kline(ESPFIX + 512 * G, SKM, "pud"),
    marker("High Kernel Mapping"),
    kline(SKM, SKM + 16 * M, "pmd"),  # below CONFIG_PHYSICAL_START: cleanup_highmap
    kline(SKM + 16 * M, SKM + 24 * M, "pmd", {"PSE", "GLB"}),  # text: ro, x
    kline(SKM + 24 * M, SKM + 28 * M, "pmd", {"PSE", "GLB", "NX"}),  # rodata
    kline(SKM + 28 * M, SKM + 32 * M, "pmd", DIRECT | {"PSE"}),  # data
    kline(SKM + 32 * M, MODULES, "pmd"),
    marker("Modules"),
    kline(MODULES, MODULES + 512 * M, "pmd"),
    kline(MODULES + 512 * M, 1 << 64, "pud"),  # the final flush, at address 0
]


def _ptdump(capsys: pytest.CaptureFixture[str], *opts: str) -> list[str]:
    assert main(["ptdump", "--arch", "x86", "--memory", "1G", *opts]) == 0
    return capsys.readouterr().out.splitlines()


def test_golden_format_matches_the_kernel_strings() -> None:
    """The golden's formatter gives the literal line whose spaces are counted from the
    format strings: 3 after the range, the size right-aligned in 9 and a blank, 4 for
    a clear USR, "RW ", 4 each for PWT, PCD, PSE and PAT, "GLB ", "NX ", the level."""
    real = "0xffff888000000000-0xffff888000001000           4K     RW                 GLB NX pte"
    assert kline(PO, PO + 4 * K, "pte", DIRECT) == real
    hole = "0xffff880000000000-0xffff888000000000         512G" + " " * 31 + "pgd"
    assert kline(LDT, PO, "pgd") == hole


def test_ptdump_x86_equals_the_golden_line_by_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole dump of a fresh 1G x86 machine without the feature, line by line."""
    lines = _ptdump(capsys, "--no-hardened-pgtables")
    for i, (got, want) in enumerate(zip(lines, GOLDEN_1G, strict=True)):
        assert got == want, f"line {i + 1}"


def _alike(lines: list[str]) -> list[tuple[str, str]]:
    """Adjacent present runs (no marker between them) that print the same flags and level."""
    pairs = itertools.pairwise(lines)
    return [
        (a, b) for a, b in pairs if a[:2] == b[:2] == "0x" and a[51:81].strip() and a[51:] == b[51:]
    ]


def test_a_pkey_splits_runs_although_x86_prints_none(capsys: pytest.CaptureFixture[str]) -> None:
    """PTE_FLAGS_MASK keeps bits 62:59, so a keyed table page breaks a run into lines
    that print alike and differ only in the key (shown with --pkey); without the
    feature (the negative control) no two adjacent lines print alike."""
    assert _alike(_ptdump(capsys, "--no-hardened-pgtables")) == []
    plain = _alike(_ptdump(capsys, "--hardened-pgtables"))
    assert plain
    keyed = _ptdump(capsys, "--hardened-pgtables", "--pkey")
    assert _alike(keyed) == []  # with the key printed, each such pair differs
    for a, b in plain:
        ka = next(x for x in keyed if x.startswith(a[:37]))
        kb = next(x for x in keyed if x.startswith(b[:37]))
        assert ka[:-7] == a and kb[:-7] == b and ka[-1] != kb[-1]


def test_pkey_option_names_the_key_of_each_present_run(capsys: pytest.CaptureFixture[str]) -> None:
    """--pkey appends kpsim's pkey=N to present runs (x86 prints no key): keyed table
    pages show pkey=1, the rest pkey=0; holes get no column."""
    lines = _ptdump(capsys, "--hardened-pgtables", "--pkey", "linear")
    runs = [line for line in lines if line.startswith("0x")]
    assert any(line.endswith(" pkey=1") for line in runs)
    assert all(line.endswith(("pkey=0", "pkey=1")) == (line[51:81].strip() != "") for line in runs)


def test_region_is_its_section_and_pci_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """ptdump vmalloc: its marker to the next region's; a region x86 lacks exits 2."""
    assert _ptdump(capsys, "--no-hardened-pgtables", "vmalloc") == GOLDEN_1G[12:16]
    assert main(["ptdump", "--arch", "x86", "--memory", "1G", "pci"]) == 2
    assert "does not exist on x86" in capsys.readouterr().err


LINE = re.compile(
    r"^0x[0-9a-f]{16}-0x[0-9a-f]{16}   [ 0-9]{8}[0-9][BKMGTPE] "
    r"((USR |    )(RW |ro )(PWT |    )(PCD |    )(PSE |    )(PAT |    )(GLB |    )(NX |x  )|"
    r" {30})(pgd|p4d|pud|pmd|pte)$"
)


@pytest.mark.parametrize(
    "opts",
    [
        ("--memory", "2G", "--linear-map", "pte"),
        ("--memory", "1G", "--workload", "kernbench:processes=2"),
        ("--memory", "1G", "--workload", "vmalloc.fix_size_alloc:pages=16,loops=4"),
    ],
)
def test_every_line_has_the_kernel_shape(
    capsys: pytest.CaptureFixture[str], opts: tuple[str, ...]
) -> None:
    """After boot on a 4K map and after workloads, each line is a marker or has
    printk_prot's exact columns, and consecutive lines tile the walked ranges."""
    assert main(["ptdump", "--arch", "x86", *opts]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if not line.startswith("---[ ")]
    assert all(LINE.match(line) for line in runs), [x for x in runs if not LINE.match(x)]
    assert runs[0].startswith("0x0000000000000000-")
    assert runs[-1].split()[0].endswith("-0x0000000000000000")
    ends = [line[19:37] for line in runs[:-1]]
    starts = [line[:18] for line in runs[1:]]
    assert ends == starts
