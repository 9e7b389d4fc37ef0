"""Record the host side of ``kpsim conform`` for the committed step files.

For each ``examples/steps/*.toml`` this starts the host child (``HostTarget``), takes
the snapshot ``kpsim conform`` seeds the model with, runs the steps on the host and
writes ``tests/data/conform/<arch>/<stem>.json``: the host's description, the
snapshot (``snapshot_to_json``) and each step's host count and delta (fork: the
child's too). tests/workloads/test_conform_recorded.py replays the model side from
the recorded snapshot and compares it with the recorded host, step by step, so the
comparison runs on any machine; re-record on a host of that architecture:

    .venv/bin/python tools/record_conform.py            # all step files
    .venv/bin/python tools/record_conform.py fork thp   # some of them
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from kpsim.workloads.host import HostTarget, thp_use_zero_page
from kpsim.workloads.snapshot import snapshot_to_json, take_snapshot
from kpsim.workloads.steps import load_steps, run_steps

ROOT = Path(__file__).resolve().parent.parent
STEPS = ROOT / "examples" / "steps"
ARCH = {"x86_64": "x86", "aarch64": "arm64"}


def record(path: Path) -> dict[str, Any]:
    """The host side of one steps file, as conform runs it (snapshot, then steps)."""
    steps = load_steps(path)
    target = HostTarget()
    try:
        snap = take_snapshot(target.pid)
        desc = dict(target.description)
        results = run_steps(steps, target)
    finally:
        target.close()
    desc["thp_use_zero_page"] = thp_use_zero_page()
    return {
        "steps_file": f"examples/steps/{path.name}",
        "host": desc,
        "snapshot": snapshot_to_json(snap),
        "host_steps": [
            {
                "index": r.index,
                "op": r.op,
                "pt_pages": r.pt_pages,
                "delta": r.delta,
                "child_pt_pages": r.child_pt_pages,
                "child_delta": r.child_delta,
            }
            for r in results
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stems", nargs="*", help="step files by stem (default: all)")
    args = ap.parse_args()
    arch = ARCH.get(platform.machine(), platform.machine())
    out = ROOT / "tests" / "data" / "conform" / arch
    out.mkdir(parents=True, exist_ok=True)
    paths = [STEPS / f"{s}.toml" for s in args.stems] or sorted(STEPS.glob("*.toml"))
    for path in paths:
        doc = record(path)
        (out / f"{path.stem}.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{path.stem}: {len(doc['host_steps'])} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
