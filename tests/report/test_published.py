"""The published tables of kpkeys-spec.md §7.2-7.4, loaded as typed rows."""

from __future__ import annotations

import zipfile
from importlib import resources
from pathlib import Path

import pytest

from kpsim.errors import InputError
from kpsim.report.published import MODES, TABLE_NAMES, Figure, load_table, select_rows

REPO = Path(__file__).resolve().parents[2]


def test_three_tables_of_seventeen_rows_with_the_same_keys():
    """v4, v5 and v5-corrected each have 17 rows, with unique keys shared across tables."""
    keys = None
    for name in TABLE_NAMES:
        table = load_table(name)
        assert table.name == name
        assert len(table.rows) == 17
        assert len(set(table.keys)) == 17
        keys = keys or table.keys
        assert table.keys == keys


@pytest.mark.parametrize(
    ("table", "key", "result_class", "without", "with_"),
    [
        ("v5-corrected", "fork/h:0", "fork: h:0", (221.39, "R"), (3.35, "R")),
        ("v5-corrected", "fix_size_alloc/p:256,h:0", "fix_size_alloc_test: p:256, h:0",
         (87.85, "R"), (-2.04, "I")),
        ("v5-corrected", "kernbench/user", "user time", (0.08, ""), (0.20, "")),
        ("v5", "munmap/h:0", "munmap: h:0", (15.57, "R"), (-1.95, "")),
        ("v5", "vm_map_ram/p:1,h:0", "vm_map_ram_test: p:1, h:0", (30.66, "R"), (27.30, "R")),
        ("v4", "kernbench/real", "elsp-64", (0.20, ""), (0.20, "")),
        ("v4", "fork/h:1", "fork: p:512", (254.32, "R"), (0.73, "")),
        ("v4", "random_size_alloc/p:1,h:0", "random_size_alloc_test: p:1, h:0",
         (74.94, "R"), (3.13, "R")),
    ],
)  # fmt: skip
def test_spot_checked_figures_match_the_series(table, key, result_class, without, with_):
    """Sample cells carry the published value, mark and result class exactly."""
    row = load_table(table).row(key)
    assert row.result_class == result_class
    assert (row.without_batching.percent, row.without_batching.mark) == without
    assert (row.with_batching.percent, row.with_batching.mark) == with_
    assert row.figure("batching") is row.with_batching


def test_figure_text_is_kept_exactly():
    """A figure prints as the published text, and parsing rejects anything else."""
    row = load_table("v5-corrected").row("fix_size_alloc/p:256,h:0")
    assert str(row.with_batching) == "(I) -2.04%"
    assert not Figure.parse("2.97%").significant
    assert Figure.parse("(R) 4.18%").significant
    with pytest.raises(ValueError):
        Figure.parse("(X) 1.00%")


def test_every_table_cites_lore_sources():
    """Each table lists its source URLs, starting with the posting on lore.kernel.org."""
    for name in TABLE_NAMES:
        table = load_table(name)
        assert table.sources[0].startswith("https://lore.kernel.org/")
        assert all(s.startswith("https://") for s in table.sources)


def test_only_v5_as_posted_skipped_set_memory_pkey():
    """v5 as posted excluded set_memory_pkey() (mock flaw); v4 and v5-corrected did not."""
    flags = {name: load_table(name).set_memory_pkey_noop for name in TABLE_NAMES}
    assert flags == {"v4": False, "v5": True, "v5-corrected": False}


def test_rows_name_their_workload_and_parameters():
    """Rows map to kpsim workloads with typed parameters (pages, huge, h, time)."""
    table = load_table("v5-corrected")
    assert table.row("fix_size_alloc/p:16,h:1").params == {"pages": 16, "huge": True}
    assert table.row("fork/h:1").workload == "micromm.fork"
    assert table.row("vm_map_ram/p:1,h:0").workload == "vmalloc.vm_map_ram"
    assert table.row("kernbench/system").params == {"time": "system"}
    assert {r.group for r in table.rows} == {"kernbench", "fork", "munmap", "vmalloc", "vm_map_ram"}


def test_fork_vmalloc_selection_leaves_munmap_and_vm_map_ram_to_predict():
    """'fork,vmalloc' names fork and the vmalloc()/vfree() tests but not vm_map_ram."""
    table = load_table("v5-corrected")
    chosen = select_rows(table, "fork,vmalloc")
    assert len(chosen) == 2 + 9
    assert "vm_map_ram/p:1,h:0" not in chosen and "munmap/h:0" not in chosen
    assert select_rows(table, "munmap, vm_map_ram") == {"munmap/h:0", "munmap/h:1",
                                                       "vm_map_ram/p:1,h:0"}  # fmt: skip


def test_selection_by_test_key_workload_and_exclusion():
    """Tokens may name a test, a key or a workload; a leading '-' removes rows."""
    table = load_table("v5-corrected")
    assert len(select_rows(table, "fix_size_alloc")) == 8
    assert select_rows(table, "fork/h:1") == {"fork/h:1"}
    assert select_rows(table, "vmalloc.random_size_alloc") == {"random_size_alloc/p:1,h:0"}
    assert len(select_rows(table, "all,-kernbench")) == 14
    both = select_rows(table, "fix_size_alloc/p:1,h:0, vm_map_ram/p:1,h:0,fork/h:1")
    assert both == {"fix_size_alloc/p:1,h:0", "vm_map_ram/p:1,h:0", "fork/h:1"}
    assert select_rows(table, "fix_size_alloc,-fix_size_alloc/p:16,h:1") == {
        r.key for r in table.rows if r.key.startswith("fix_size_alloc/") and r.key != (
            "fix_size_alloc/p:16,h:1")
    }  # fmt: skip


@pytest.mark.parametrize("spec", ["forks", "", " , "])
def test_bad_selection_is_input_error(spec):
    """A selection naming no row (or nothing at all) is an InputError."""
    with pytest.raises(InputError):
        select_rows(load_table("v4"), spec)


def test_unknown_table_is_input_error():
    """Asking for a table that does not exist lists the ones that do."""
    with pytest.raises(InputError, match="v5-corrected"):
        load_table("v6")
    assert load_table("v5_corrected").name == "v5-corrected"


def test_data_files_ship_in_the_wheel(tmp_path):
    """hatchling's wheel contains the five data files of kpsim.report."""
    from hatchling.builders import wheel

    built = list(
        wheel.WheelBuilder(str(REPO)).build(directory=str(tmp_path), versions=["standard"])
    )
    names = set(zipfile.ZipFile(built[0]).namelist())
    for file in ("costs.toml", "calibration.toml", "published_v4.toml", "published_v5.toml",
                 "published_v5_corrected.toml"):  # fmt: skip
        assert f"kpsim/report/data/{file}" in names
        assert resources.files("kpsim.report").joinpath("data", file).is_file()


def test_modes_are_batching_and_no_batching():
    """The two published columns are named batching and no_batching."""
    assert MODES == ("batching", "no_batching")


def test_each_table_names_the_posting_it_measured():
    """reproduce runs a table's rows with the kpkeys behaviour of the posting measured."""
    from kpsim.mm.kpkeys_series import SERIES

    want = {"v4": "v4", "v5": "v5", "v5-corrected": "v5"}
    for name, series in want.items():
        table = load_table(name)
        assert table.series == series and table.series in SERIES
