"""The workload registry: parameter validation, defaults, errors, and measured deltas."""

from __future__ import annotations

import pytest

import kpsim
from kpsim.errors import InputError
from kpsim.machine.boot import KPKEYS_COUNTERS
from kpsim.machine.scenario import WorkloadSpec
from kpsim.workloads.registry import (
    KINDS,
    WORKLOADS,
    ParamSpec,
    WorkloadDef,
    run_workload,
    validate_params,
)

NAMES = {
    "micromm.fork",
    "micromm.munmap",
    "vmalloc.fix_size_alloc",
    "vmalloc.random_size_alloc",
    "vmalloc.vm_map_ram",
    "kernbench",
}


def test_every_series_benchmark_is_registered_and_documented():
    """Each workload of issue 7 is registered with a doc line and typed parameters."""
    assert set(WORKLOADS) >= NAMES
    for name, wd in WORKLOADS.items():
        assert isinstance(wd, WorkloadDef) and wd.name == name and wd.doc
        for p in wd.params:
            assert isinstance(p, ParamSpec) and p.kind in KINDS and p.doc


def test_defaults_are_filled_and_sizes_parsed():
    """Missing parameters take their defaults; sizes become byte counts."""
    got = validate_params("micromm.fork", {"size": "64M", "h": 1})
    assert got == {"size": 64 << 20, "h": 1, "repeat": 1}
    assert validate_params("micromm.munmap", {})["size"] == 1 << 30


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("micromm.fork", {"sise": "1G"}, "unknown parameter 'sise'"),
        ("micromm.fork", {"h": 2}, "must be one of 0, 1, got 2"),
        ("micromm.fork", {"size": "lots"}, "not a size"),
        ("micromm.fork", {"repeat": 0}, "must be at least 1"),
        ("micromm.fork", {"repeat": True}, "expected an integer"),
        ("vmalloc.fix_size_alloc", {"pages": 3}, "must be one of 1, 4, 16, 64, 256"),
        ("vmalloc.fix_size_alloc", {"huge": "yes"}, "expected true or false"),
        ("nosuch", {}, "unknown workload 'nosuch'"),
    ],
)
def test_bad_parameters_are_input_errors(name, params, needle):
    """Each bad parameter is an InputError naming the workload, parameter and problem."""
    with pytest.raises(InputError, match=needle.replace("(", r"\(")):
        validate_params(name, params)


def test_scenario_spec_errors_name_file_and_line():
    """With a scenario's WorkloadSpec the error carries its file and the parameter's line."""
    spec = WorkloadSpec("micromm.fork", {"h": 7}, 4, {"h": 6}, "s.toml")
    with pytest.raises(InputError) as err:
        validate_params("micromm.fork", {"h": 7}, spec=spec)
    assert str(err.value).startswith("s.toml:6: [[workload]] micromm.fork h: must be one of")
    spec2 = WorkloadSpec("vmalloc.vm_map_ram", {"bogus": 1}, 9, {"bogus": 10}, "s.toml")
    with pytest.raises(InputError, match=r"^s.toml:10: .*unknown parameter 'bogus'"):
        validate_params("vmalloc.vm_map_ram", {"bogus": 1}, spec=spec2)


def test_run_workload_returns_the_measured_delta_only():
    """micromm.fork's delta is the fork alone: no page faults from the populate before it."""
    m = kpsim.boot(memory="256M", cpus=2)
    c = run_workload(m, "micromm.fork", {"size": "8M"})
    assert c["fork_pte_copy"] == 2048 + 1  # + the stack page
    assert c["pgfault"] == 0 and c["page_alloc.clear_page"] < 16
    assert c["pgtable_alloc"] >= 4  # the child's PTE tables (8M = 4 of them) at least
    # zero entries are dropped, except issue 5's names, which every output carries
    assert all(v != 0 for k, v in c.items() if k not in KPKEYS_COUNTERS)
    assert set(KPKEYS_COUNTERS) <= set(c)


def test_unknown_workload_in_run_is_input_error():
    m = kpsim.boot(memory="256M", cpus=1)
    with pytest.raises(InputError, match="unknown workload"):
        run_workload(m, "micromm.frok", {})
