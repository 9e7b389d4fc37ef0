"""``kpsim pba``: the composition series on the command line, shrink on demand."""

import json

from kpsim.cli.main import main


def test_pba_verb_json_series_and_on_demand_shrink(capsys):
    argv = ["pba", "--memory", "512M", "--linear-map", "block", "--rounds", "120"]
    assert main([*argv, "--sample-every", "40", "--shrink", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    events = [s["event"] for s in doc["linear_map"]["timeline"]]
    assert {"round 40", "round 80", "round 120", "churn done", "shrink"} <= set(events)
    assert doc["workload"]["processes"] == 120
    assert doc["shrunk_pages"] > 0
    # 16 are kept; a page-by-page release may split a block, taking one more for its table
    assert 15 <= doc["linear_map"]["allocator"]["cached"] <= 16


def test_pba_verb_text_and_bad_input(capsys):
    assert main(["pba", "--memory", "512M", "--linear-map", "block", "--rounds", "10"]) == 0
    out = capsys.readouterr().out
    assert "allocator pba, linear map block" in out and "init_late" in out
    assert main(["pba", "--memory", "512M", "--pool", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pool" in err[0]
