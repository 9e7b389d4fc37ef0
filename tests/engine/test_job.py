"""The main job's engine: a plain document, the same one ``kpsim run --json`` prints,
progress reported step by step, and the audit modes (full, end, none)."""

from __future__ import annotations

import json

import pytest

from kpsim.cli.main import main
from kpsim.engine.job import execute
from kpsim.errors import InputError
from kpsim.machine.scenario import parse_scenario

TINY = """\
seed = 1

[machine]
memory = "256M"
cpus = 1

[[workload]]
name = "micromm.munmap"
size = "2M"
h = 0
"""


@pytest.fixture(scope="module")
def tiny_doc():
    """One engine run of TINY (three machines: boot, workload on, workload off)."""
    return execute(parse_scenario(TINY, "tiny.toml"))


def test_engine_document_is_what_run_json_prints(tmp_path, capsys, tiny_doc):
    """`kpsim run --json` prints the engine's document unchanged (same path, same run)."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert main(["run", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = json.loads(json.dumps(tiny_doc))
    expected["scenario"]["path"] = str(path)
    assert printed == expected


def test_progress_reports_each_step_then_the_end(tiny_doc):
    """progress(done, total, label): one call per step in order, then done == total."""
    calls = []
    doc = execute(parse_scenario(TINY, "tiny.toml"), progress=lambda *a: calls.append(a))
    assert doc == tiny_doc
    assert [c[0] for c in calls] == [0, 1, 2, 3] and {c[1] for c in calls} == {3}
    assert calls[0][2].startswith("boot") and calls[-1][2] == "done"
    assert "micromm.munmap size=2M h=0 (feature on)" in calls[1][2]


def test_audit_end_is_the_default_and_none_audits_nothing(tiny_doc):
    """end: every machine audited at the end of its run; none: no machine; same counters."""
    assert tiny_doc["audit"] == {"machines": 3, "violations": []}
    none = execute(parse_scenario(TINY, "tiny.toml"), audit="none")
    assert none["audit"] == {"machines": 0, "violations": [], "mode": "none"}
    assert none["workloads"] == tiny_doc["workloads"]


def test_audit_full_watches_frees_and_catches_a_keyed_free(monkeypatch):
    """full: a page freed while still keyed is a violation (FreeWatch); end misses it."""
    from kpsim.workloads import registry

    def keyed_free(m, params, rng):
        """A broken 'workload': keys a fresh page then frees it without resetting its pkey."""
        pfn = m.k.page_alloc.alloc_pages(0)
        m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 1)
        m.k.page_alloc.free_pages(pfn, 0)
        m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 0)  # clean again at rest

    import dataclasses

    bad = dataclasses.replace(registry.WORKLOADS["micromm.munmap"], run=keyed_free)
    monkeypatch.setitem(registry.WORKLOADS, "micromm.munmap", bad)
    s = parse_scenario(TINY, "tiny.toml")
    full = execute(s, audit="full")
    assert full["status"] == 1 and full["audit"]["mode"] == "full"
    where = {v["machine"] for v in full["audit"]["violations"]}
    assert "#1 micromm.munmap (feature on), while running" in where
    end = execute(s, audit="end")  # the negative control: at rest the page looks clean
    assert end["status"] == 0 and end["audit"]["violations"] == []


def test_unknown_audit_mode_is_input_error():
    """An audit mode other than full, end, none is bad input."""
    with pytest.raises(InputError, match="audit mode 'some'"):
        execute(parse_scenario(TINY, "tiny.toml"), audit="some")
