"""``kpsim walk --arch x86``: x86-64's dump_pagetable() line and each entry decoded.

Expected leaf values are x86 arithmetic, not read back from the model: a direct-map
4K page is ``pa | __PAGE_KERNEL`` (P, RW, A, D, G, NX: 0x8000000000000163), the kernel
text a 2M page ``pa | __PAGE_KERNEL_LARGE_EXEC`` without RW (P, A, D, PSE, G: 0x1e1).
"""

from __future__ import annotations

import json
import re

import pytest

from kpsim.cli.main import main

PO = 0xFFFF888000000000


def _walk(capsys: pytest.CaptureFixture[str], addr: int, *opts: str) -> tuple[int, str, str]:
    code = main(
        ["walk", "--arch", "x86", "--memory", "1G", "--no-hardened-pgtables", *opts, hex(addr)]
    )
    out = capsys.readouterr()
    return code, out.out, out.err


def test_direct_map_4k_page_walks_four_levels(capsys: pytest.CaptureFixture[str]) -> None:
    """PA 0x1000 lies in the 4K-mapped first 2 MiB: PGD, the folded P4D (the same value),
    PUD, PMD, then the PTE 0x8000000000001163; the result line names the page."""
    code, out, _ = _walk(capsys, PO + 0x1000)
    assert code == 0
    first = out.splitlines()[0]
    assert re.fullmatch(
        r"PGD ([0-9a-f]+) P4D \1 PUD [0-9a-f]+ PMD [0-9a-f]+ PTE 8000000000001163", first
    )
    assert "pte[1] at PA" in out
    assert out.splitlines()[-1] == (
        f"{PO + 0x1000:#018x} (linear) -> PA 0x1000: level 1 4K page, read-write, "
        "supervisor, no execute, pkey 0"
    )


def test_kernel_text_is_a_2m_leaf_and_the_walk_stops_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """__START_KERNEL_map + 16M: pgd[511], pud[510], then a PSE PDE 0x10001e1 (ro, x);
    dump_pagetable stops after a leaf, keeping the blank after "PMD %lx "."""
    code, out, _ = _walk(capsys, 0xFFFFFFFF81000000)
    assert code == 0
    assert re.fullmatch(r"PGD ([0-9a-f]+) P4D \1 PUD [0-9a-f]+ PMD 10001e1 ", out.splitlines()[0])
    assert "pgd[511]" in out and "pud[510]" in out and "pte[" not in out
    assert out.rstrip().endswith("level 2 2M page, read-only, supervisor, executable, pkey 0")


def test_unmapped_address_stops_at_the_none_entry(capsys: pytest.CaptureFixture[str]) -> None:
    """VMALLOC_START before any vmalloc: the PGD entry exists (preallocated PUD table),
    the PUD entry is 0, so the line ends "PUD 0 " and the summary names a #PF;
    the mapped direct-map address above is the positive control."""
    code, out, _ = _walk(capsys, 0xFFFFC90000000000)
    assert code == 0
    assert re.fullmatch(r"PGD ([0-9a-f]+) P4D \1 PUD 0 ", out.splitlines()[0])
    assert "not mapped: an access takes a #PF (P=0 in the level 3 entry)" in out


def test_json_carries_the_line_and_decoded_entries(capsys: pytest.CaptureFixture[str]) -> None:
    """--json: dump_pagetable line, one decoded step per level read, the PA."""
    code, out, _ = _walk(capsys, PO + 0x1000, "--json")
    doc = json.loads(out)
    assert code == 0
    assert [s["table"] for s in doc["steps"]] == ["pgd", "pud", "pmd", "pte"]
    assert doc["steps"][-1]["decoded"]["pkey"] == 0 and doc["pa"] == "0x1000"
    assert doc["dump_pagetable"][0].endswith("PTE 8000000000001163")


@pytest.mark.parametrize("addr", [0x1000, 0x0000900000000000])
def test_user_or_noncanonical_address_exits_2(
    capsys: pytest.CaptureFixture[str], addr: int
) -> None:
    """A user address (swapper has none) or a non-canonical one: one line, exit 2."""
    code, out, err = _walk(capsys, addr)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "walk takes a kernel address" in err
