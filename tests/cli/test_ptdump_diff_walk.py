"""``kpsim ptdump`` after workloads and ``--diff``; ``kpsim walk ADDR``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kpsim.cli.main import main

BASE = ("--memory", "1G")
VMALLOC = "vmalloc.fix_size_alloc:pages=16,loops=4"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_ptdump_after_a_workload_shows_what_it_left(capsys: pytest.CaptureFixture[str]) -> None:
    """vmalloc frees its pages but keeps its PTE tables: after the workload the vmalloc()
    section has a PTE-level hole where a fresh machine has a PMD-level one."""
    _rc, fresh, _ = _run(capsys, "ptdump", "vmalloc", *BASE)
    rc, after, _ = _run(capsys, "ptdump", "vmalloc", *BASE, "--workload", VMALLOC)
    assert rc == 0
    assert not re.search(r" PTE$", fresh, re.M)
    assert re.search(r"^0xffff8000810.* PTE$", after, re.M)


def _scenario(tmp_path: Path, name: str, hardened: bool) -> str:
    path = tmp_path / name
    path.write_text(
        '[machine]\nmemory = "1G"\n'
        f"[kernel]\nhardened_pgtables = {str(hardened).lower()}\n"
        '[[workload]]\nname = "vmalloc.fix_size_alloc"\npages = 16\nloops = 4\n'
    )
    return str(path)


def test_diff_of_two_scenarios(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--diff A B with scenarios: the feature moves table pages to pkey 1 (--pkey), so
    the dumps differ (exit 1, a unified diff); a scenario against itself: exit 0."""
    on = _scenario(tmp_path, "on.toml", True)
    off = _scenario(tmp_path, "off.toml", False)
    rc, out, _ = _run(capsys, "ptdump", "linear", "--pkey", "--diff", on, off)
    assert rc == 1
    lines = out.splitlines()
    assert lines[0] == f"--- {on}" and lines[1] == f"+++ {off}"
    assert any(line.startswith("-") and line.endswith("pkey=1") for line in lines[2:])
    assert not any(line.startswith("+") and line.endswith("pkey=1") for line in lines[2:])
    rc, out, _ = _run(capsys, "ptdump", "linear", "--pkey", "--diff", on, on)
    assert (rc, out) == (0, "")


def test_diff_a_saved_dump_against_a_scenario(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A saved dump (kpsim ptdump > file) compared with the scenario that made it: same;
    one line edited: that line in the diff; --json says same: false."""
    scen = _scenario(tmp_path, "s.toml", True)
    _rc, dump, _ = _run(capsys, "ptdump", "--scenario", scen)
    saved = tmp_path / "saved.txt"
    saved.write_text(dump)
    assert _run(capsys, "ptdump", "--diff", str(saved), scen)[0] == 0
    lines = dump.splitlines()
    lines[2] = lines[2].replace("RW", "ro")
    saved.write_text("\n".join(lines) + "\n")
    rc, out, _ = _run(capsys, "ptdump", "--diff", str(saved), scen, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["same"] is False
    assert f"-{lines[2]}" in doc["diff"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read dump"), ("hello\n", "not a kernel_page_tables dump")],
)
def test_diff_bad_dump_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, problem: str
) -> None:
    """A missing or foreign file: one line naming it, exit status 2."""
    path = tmp_path / "x.txt"
    if content is not None:
        path.write_text(content)
    rc, out, err = _run(capsys, "ptdump", "--diff", str(path), str(path))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and str(path) in err and problem in err


def test_walk_prints_show_pte_and_each_level(capsys: pytest.CaptureFixture[str]) -> None:
    """walk of a linear-map address: show_pte's two lines, the four levels decoded, and
    the end of the walk: the page's PA, its pkey (0 for a data page)."""
    va = 0xFFFF000000C00000 + 0x5000
    rc, out, _ = _run(capsys, "walk", hex(va), *BASE)
    assert rc == 0
    lines = out.splitlines()
    assert re.fullmatch(r"swapper pgtable: 4k pages, 48-bit VAs, pgdp=[0-9a-f]{16}", lines[0])
    show = re.fullmatch(
        rf"\[{va:016x}\] pgd=([0-9a-f]{{16}}), p4d=\1, pud=[0-9a-f]{{16}}, "
        r"pmd=[0-9a-f]{16}, pte=([0-9a-f]{16})",
        lines[1],
    )
    assert show is not None
    assert [line.split("[")[0] for line in lines if re.match(r"^p(gd|ud|md|te)\[", line)] == [
        "pgd",
        "pud",
        "pmd",
        "pte",
    ]
    assert lines[-1].startswith(f"{va:#018x} (linear) -> PA {0x40C05000:#x}: level 3 page")
    assert "pkey 0" in lines[-1] and "MT_NORMAL_TAGGED" in lines[-1]
    pte = int(show.group(2), 16)
    assert pte & ((1 << 48) - 1) & ~0xFFF == 0x40C05000


def test_walk_json_of_a_table_page_has_pkey_1(capsys: pytest.CaptureFixture[str]) -> None:
    """walk --json of the linear alias of the pud table that maps the linear map: its
    leaf carries pkey 1 with the feature on and pkey 0 with it off (negative control)."""
    va = 0xFFFF000000C00000
    _rc, out, _ = _run(capsys, "walk", hex(va), *BASE, "--json")
    pud_table = int(json.loads(out)["steps"][1]["table_pa"], 16)
    alias = 0xFFFF000000000000 + pud_table - 0x40000000
    for flag, pkey in (("--hardened-pgtables", 1), ("--no-hardened-pgtables", 0)):
        _rc, out, _ = _run(capsys, "walk", hex(alias), *BASE, flag, "--json")
        doc = json.loads(out)
        assert doc["steps"][-1]["decoded"]["pkey"] == pkey
        assert doc["pa"] == hex(pud_table)


@pytest.mark.parametrize(
    ("addr", "problem"),
    [("0x1000", "user address"), ("0x8000000000000000", "between user and kernel"), ("x", "")],
)
def test_walk_bad_address_exit_2(
    capsys: pytest.CaptureFixture[str], addr: str, problem: str
) -> None:
    """A user address, one in the hole between the halves, or no number: exit 2."""
    rc, out, err = _run(capsys, "walk", addr, *BASE)
    assert rc == 2 and out == "" and err.count("\n") == 1 and problem in err
