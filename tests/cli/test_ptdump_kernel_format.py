"""``kpsim ptdump`` against a golden derived from arch/arm64/mm/ptdump.c's format strings.

The expected lines are built here, independently of kpsim.report.ptdump, with the
kernel's printf formats (``"0x%016lx-0x%016lx   "``, ``"%9lu%c %s"``, ``" %s"`` per
``pte_bits`` column, ``"---[ %s ]---"``) and the set/clear strings of ``pte_bits``
written out as ptdump.c has them; the layout of a fresh 1 GiB PTE-mapped machine is
derived from what boot maps (the 12 MiB text/rodata linear alias in 2M blocks, the rest
of memory PTE-mapped and tagged, the kernel image's three segments, the vmemmap's
2M blocks), each hole at the level the pagewalk reports it.
"""

from __future__ import annotations

import re

import pytest

from kpsim.cli.main import main

G, M, K = 1 << 30, 1 << 20, 1 << 10
PAGE_OFFSET = 0xFFFF000000000000
KIMAGE = 0xFFFF800080000000

# pte_bits, in order: (name when set, name when clear); the memory type is one column.
COLUMNS = [
    ("valid", " ", "F"),
    ("USR", "USR", "   "),
    ("ro", "ro", "RW"),
    ("NX", "NX", "x "),
    ("SHD", "SHD", "   "),
    ("AF", "AF", "  "),
    ("NG", "NG", "  "),
    ("CON", "CON", "   "),
    ("table", "   ", "BLK"),  # PTE_TABLE_BIT set: a page; clear: a block
    ("UXN", "UXN", "   "),
    ("GP", "GP", "  "),
]


def kline(start: int, end: int, level: str, flags: set[str] | None = None, mt: str = "") -> str:
    """One note_page line: ``flags`` the pte_bits that are set; None for a hole."""
    delta, unit = ((end - start) % (1 << 64)) >> 10, 0
    while not delta & 1023 and unit < 5:
        delta >>= 10
        unit += 1
    s = "0x%016x-0x%016x   " % (start, end % (1 << 64))  # noqa: UP031 (the kernel's format)
    s += "%9d%c %s" % (delta, "KMGTPE"[unit], level)  # noqa: UP031
    if flags is None:
        return s
    for key, on, off in COLUMNS:
        s += " %s" % (on if key in flags else off)
    return s + " %s" % mt  # noqa: UP031


def marker(name: str) -> str:
    return "---[ %s ]---" % name  # noqa: UP031


RODATA_ALIAS = {"valid", "ro", "NX", "SHD", "AF", "UXN"}  # 2M blocks: "table" clear
LINEAR = {"valid", "NX", "SHD", "AF", "table", "UXN"}
TEXT = {"valid", "ro", "SHD", "AF", "CON", "table", "UXN"}
RODATA = {"valid", "ro", "NX", "SHD", "AF", "table", "UXN"}
DATA = {"valid", "NX", "SHD", "AF", "CON", "table", "UXN"}
VMEMMAP = {"valid", "NX", "SHD", "AF", "UXN"}

GOLDEN_1G = [
    marker("Linear Mapping start"),
    kline(PAGE_OFFSET, PAGE_OFFSET + 12 * M, "PMD", RODATA_ALIAS, "MEM/NORMAL"),
    kline(PAGE_OFFSET + 12 * M, PAGE_OFFSET + G, "PTE", LINEAR, "MEM/NORMAL-TAGGED"),
    kline(PAGE_OFFSET + G, PAGE_OFFSET + 512 * G, "PUD"),  # rest of pud table 0
    kline(PAGE_OFFSET + 512 * G, 0xFFFF800000000000, "PGD"),  # pgd 1..255: none
    marker("Linear Mapping end"),
    marker("Modules start"),
    kline(0xFFFF800000000000, KIMAGE, "PUD"),
    marker("Modules end"),
    marker("vmalloc() area"),
    kline(KIMAGE, KIMAGE + 8 * M, "PTE", TEXT, "MEM/NORMAL"),
    kline(KIMAGE + 8 * M, KIMAGE + 12 * M, "PTE", RODATA, "MEM/NORMAL"),
    kline(KIMAGE + 12 * M, KIMAGE + 16 * M, "PTE", DATA, "MEM/NORMAL"),
    kline(KIMAGE + 16 * M, 0xFFFF8000C0000000, "PMD"),
    kline(0xFFFF8000C0000000, 0xFFFF808000000000, "PUD"),
    kline(0xFFFF808000000000, 0xFFFFFD8000000000, "PGD"),
    kline(0xFFFFFD8000000000, 0xFFFFFDFFC0000000, "PUD"),
    marker("vmalloc() end"),
    marker("vmemmap start"),
    kline(0xFFFFFDFFC0000000, 0xFFFFFDFFC0000000 + 16 * M, "PMD", VMEMMAP, "MEM/NORMAL"),
    kline(0xFFFFFDFFC0000000 + 16 * M, 0xFFFFFE0000000000, "PMD"),
    kline(0xFFFFFE0000000000, 1 << 64, "PGD"),  # the final flush, at address 0
]


def _ptdump(capsys: pytest.CaptureFixture[str], *opts: str) -> list[str]:
    assert main(["ptdump", "--memory", "1G", "--linear-map", "pte", *opts]) == 0
    return capsys.readouterr().out.splitlines()


def test_golden_format_matches_the_kernel_strings() -> None:
    """The golden's formatter gives, for the image's text, the literal line whose
    spaces are counted from the format strings: 3 after the range, the size right-
    aligned in 9, 2 for the valid column's " ", 4 for a clear USR, ...)."""
    real = (
        "0xffff800080000000-0xffff800080800000           8M PTE       "
        "ro x  SHD AF    CON     UXN    MEM/NORMAL"
    )
    assert kline(KIMAGE, KIMAGE + 8 * M, "PTE", TEXT, "MEM/NORMAL") == real


@pytest.mark.parametrize("hardened", ["--hardened-pgtables", "--no-hardened-pgtables"])
def test_ptdump_all_equals_the_golden_line_by_line(
    capsys: pytest.CaptureFixture[str], hardened: str
) -> None:
    """The whole dump of a fresh 1G machine, line by line; POIndex is not in ptdump.c's
    mask, so the feature does not change the kernel-format dump."""
    lines = _ptdump(capsys, hardened)
    for i, (got, want) in enumerate(zip(lines, GOLDEN_1G, strict=True)):
        assert got == want, f"line {i + 1}"


def test_ptdump_region_is_its_section_of_the_dump(capsys: pytest.CaptureFixture[str]) -> None:
    """ptdump vmalloc: from its marker to its end marker; kimage: the image's lines."""
    assert _ptdump(capsys, "vmalloc") == GOLDEN_1G[9:18]
    assert _ptdump(capsys, "kimage") == [GOLDEN_1G[9], *GOLDEN_1G[10:13], GOLDEN_1G[17]]


def test_an_invalid_pte_shows_in_the_valid_column(capsys: pytest.CaptureFixture[str]) -> None:
    """set_direct_map_invalid_noflush leaves a non-zero PTE with PTE_VALID clear: the
    kernel prints it with ``F`` in the valid column, as its own 4K run."""
    from kpsim.machine import Machine
    from kpsim.machine.config import MachineConfig
    from kpsim.report.ptdump import ptdump, ptdump_text

    m = Machine.boot(MachineConfig(memory="1G"))
    pfn = m.k.page_alloc.alloc_pages(0, 0)
    va = m.arch.page_to_virt(pfn)
    m.arch.set_direct_map_invalid_noflush(pfn)
    lines = ptdump_text(ptdump(m, "linear")).splitlines()
    want = kline(va, va + 4 * K, "PTE", LINEAR - {"valid"}, "MEM/NORMAL-TAGGED")
    assert want in lines
    m.arch.set_direct_map_default_noflush(pfn)  # negative control: valid again, merged
    lines = ptdump_text(ptdump(m, "linear")).splitlines()
    assert want not in lines and not any(" F " in line for line in lines)


LINE = re.compile(
    r"^0x[0-9a-f]{16}-0x[0-9a-f]{16}   [ 0-9]{8}[0-9][KMGTPE] (PGD|P4D|PUD|PMD|PTE)"
    r"( ( |F) (USR|   ) (ro|RW) (NX|x ) (SHD|   ) (AF|  ) (NG|  ) (CON|   ) (   |BLK)"
    r" (UXN|   ) (GP|  ) (DEVICE/nGnRnE|DEVICE/nGnRE|MEM/NORMAL-NC|MEM/NORMAL|"
    r"MEM/NORMAL-TAGGED))?$"
)


@pytest.mark.parametrize(
    "opts",
    [
        ("--memory", "2G", "--linear-map", "block"),
        ("--memory", "1G", "--workload", "kernbench:processes=2"),
        ("--memory", "1G", "--workload", "vmalloc.fix_size_alloc:pages=16,loops=4"),
    ],
)
def test_every_line_has_the_kernel_shape(
    capsys: pytest.CaptureFixture[str], opts: tuple[str, ...]
) -> None:
    """After boot on a block map and after workloads, each line is a marker or has the
    exact columns of ptdump.c, and consecutive lines tile the address space."""
    assert main(["ptdump", *opts]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if not line.startswith("---[ ")]
    assert all(LINE.match(line) for line in runs), [x for x in runs if not LINE.match(x)]
    assert runs[0].startswith(f"0x{PAGE_OFFSET:016x}-")
    assert runs[-1].split()[0].endswith("-0x0000000000000000")
    ends = [line[19:37] for line in runs[:-1]]  # "0x%016lx-0x%016lx": the end
    starts = [line[:18] for line in runs[1:]]
    assert ends == starts
