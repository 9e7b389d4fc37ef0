"""kpsim boot and kpsim ptdump: JSON keys, text shape, bad configurations exit 2."""

from __future__ import annotations

import json

import pytest

from kpsim.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_boot_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """boot --json: machine, config, linear_map.mappings, page_tables.kernel, counters."""
    rc, out, _ = _run(capsys, "boot", "--memory", "1G", "--json")
    doc = json.loads(out)
    assert rc == 0
    assert doc["machine"] == {
        "memory_bytes": 1 << 30,
        "dram_base": "0x40000000",
        "cpus": 2,
        "poe": True,
    }
    assert doc["config"]["linear_map"] == "pte"
    assert list(doc["linear_map"]["mappings"]) == ["1G", "32M", "2M", "64K", "4K"]
    # the image's text+rodata alias (12 MiB) is six 2M blocks (map_mem, NO_CONT_MAPPINGS)
    assert doc["linear_map"]["mappings"]["4K"] == (1 << 30) // 4096 - 6 * 512
    assert set(doc["page_tables"]["kernel"]) == {"pgd", "pud", "pmd", "pte"}
    assert doc["page_tables"]["kernel"]["pte"] == 512 - 6 + 8
    assert "tlbi" in doc["counters"]


def test_boot_block_no_poe_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """boot text: one summary per line; block map without POE shows 1G blocks."""
    rc, out, _ = _run(
        capsys, "boot", "--memory", "2G", "--linear-map", "block", "--no-poe", "--cpus", "1"
    )
    assert rc == 0
    assert "POE off" in out and "1 CPUs" in out
    assert "1G 1" in out  # the second GiB; the first, holding the image, is PMD-mapped


@pytest.mark.parametrize(
    "argv",
    [
        ["--memory", "0"],
        ["--memory", "3000000"],
        ["--memory", "lots"],
        ["--cpus", "100000"],
        ["--linear-map", "huge"],
        ["--allocator", "nope"],
    ],
)
def test_bad_config_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A bad machine option is one line on stderr and exit status 2, no traceback."""
    rc, out, err = _run(capsys, "boot", *argv)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kpsim boot: ")


def test_ptdump_linear_pkey_column_shows_keyed_table_pages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ptdump linear --pkey with hardening: some linear-map runs carry pkey=1 (table
    pages); with the feature off none does (the negative control)."""
    rc, out, _ = _run(capsys, "ptdump", "linear", "--memory", "1G", "--pkey")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "---[ Linear Mapping start ]---"
    assert lines[-1] == "---[ Linear Mapping end ]---"
    assert any(line.endswith("pkey=1") for line in lines)
    _rc, out, _ = _run(
        capsys, "ptdump", "linear", "--memory", "1G", "--pkey", "--no-hardened-pgtables"
    )
    assert not any(line.endswith("pkey=1") for line in out.splitlines())
    assert any(line.endswith("pkey=0") for line in out.splitlines())


def test_ptdump_json_sections_follow_the_markers(capsys: pytest.CaptureFixture[str]) -> None:
    """ptdump --json: one section per marker printed, entries with range, level, attrs;
    the linear map's valid entries add up to the machine's memory."""
    _rc, out, _ = _run(
        capsys,
        "ptdump",
        "--memory",
        "1G",
        "--linear-map",
        "block",
        "--no-hardened-pgtables",
        "--json",
    )
    doc = json.loads(out)
    names = [s["marker"] for s in doc["sections"]]
    assert names[:4] == [
        "Linear Mapping start",
        "Linear Mapping end",
        "Modules start",
        "Modules end",
    ]
    assert "vmemmap start" in names
    first = doc["sections"][0]["entries"][0]
    assert set(first) >= {"start", "end", "size", "level", "attrs", "hole", "valid"}
    total = sum(e["size"] for e in doc["sections"][0]["entries"] if e["valid"])
    assert total == 1 << 30


def test_boot_text_shows_bytes_and_linear_map_tables(capsys: pytest.CaptureFixture[str]) -> None:
    """boot text: the mapped bytes, each leaf size's count and bytes, and the linear
    map's table pages by level, the same figures as --json."""
    _rc, out, _ = _run(capsys, "boot", "--memory", "1G", "--json")
    doc = json.loads(out)["linear_map"]
    rc, out, _ = _run(capsys, "boot", "--memory", "1G")
    assert rc == 0
    assert f"linear map: 1G mapped ({1 << 30} bytes)" in out
    assert f"2M {doc['mappings']['2M']} (12M)" in out
    tables = doc["tables"]
    want = ", ".join(f"{lvl} {n} ({n * 4}K)" for lvl, n in tables.items())
    total = sum(tables.values())
    assert f"  table pages by level: {want}; total {total} ({total * 4}K)" in out.splitlines()


@pytest.mark.parametrize(
    ("argv", "warned"),
    [
        (("--linear-map", "block", "--allocator", "minimal", "--allow-unsafe-split"), True),
        (("--linear-map", "block", "--allocator", "grouped", "--allow-unsafe-split"), True),
        (("--linear-map", "block", "--allocator", "pba", "--allow-unsafe-split"), False),
        (("--linear-map", "pte", "--allocator", "minimal", "--allow-unsafe-split"), False),
        (("--linear-map", "block", "--allocator", "minimal", "--allow-unsafe-split",
          "--no-hardened-pgtables"), False),
    ],
)  # fmt: skip
def test_an_unsafe_configuration_warns_on_screen(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], warned: bool
) -> None:
    """The minimal (or grouped) allocator on a block map warns on stderr, in one line;
    safe configurations (the PBA, a PTE map, the feature off) do not."""
    rc, _out, err = _run(capsys, "boot", "--memory", "1G", *argv)
    assert rc == 0
    if warned:
        assert err.startswith("kpsim boot: WARNING: the ") and err.count("\n") == 1
        assert "unprotected" in err
    else:
        assert err == ""
