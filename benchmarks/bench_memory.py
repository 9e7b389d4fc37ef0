"""Host memory and time of ``kpsim run`` with a fork of 1 GiB (issue 19 item 3).

``kpsim run --workload micromm.fork:size=1G,h=0`` (the series' own micromm size, with
no scenario file: the default machine, KUnit, the audit, the workload with the feature
on and off) runs in a fresh subprocess, as a user runs it; its peak resident set
(``ru_maxrss`` of that child alone, from ``wait4``) and wall time are printed against
the bound: host memory within 1.5x the simulated page-table memory plus 150 MiB.

The simulated page-table memory is the peak of ``NR_PAGETABLE`` (the ``PageTables``
level: every kernel and user table page, 4 KiB each) over the run: it is reached
right after the fork, when the parent's and the child's tables are both live. It is
measured in a second fresh subprocess that boots the same machine (the same scenario
and ``machine_config``), populates and forks as the workload does, and reads the level
with the child still alive. The interpreter's own floor (``python -c "import kpsim"``
with numpy, the same child measurement) is printed for reference.

Prints, never asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKLOAD = "micromm.fork:size=1G,h=0"
MIB = 1 << 20

PAGETABLES = r"""
import json, sys
from kpsim.machine.boot import Machine
from kpsim.machine.scenario import Scenario, machine_config
from kpsim.machine.scenario_text import parse_workload_option
from kpsim.mm.process import Process
from kpsim.workloads.micromm import _populate, _size
from kpsim.workloads.registry import validate_params

spec = parse_workload_option(sys.argv[1])
s = Scenario({}, {}, [spec], None, 0, "<benchmark>")
values = validate_params(spec.name, spec.params, spec=spec)
cfg = machine_config(s)
m = Machine.boot(cfg)
p = Process.create(m, "micromm-fork")
_populate(p, _size(values), int(values["h"]))
child = p.fork()
peak = m.k.counters["PageTables"]
print(json.dumps({"tables": peak, "memory": cfg.as_dict().get("memory_bytes")}))
"""


def _child_rusage(cmd: list[str]) -> tuple[float, int, int, str]:
    """Run ``cmd``; (wall s, its peak RSS in bytes, exit status, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss * 1024, proc.returncode, out


def main() -> dict[str, float]:
    kpsim = str(Path(sys.executable).with_name("kpsim"))
    _, floor, _, _ = _child_rusage([sys.executable, "-c", "import numpy, kpsim.machine"])
    _, _, rc, out = _child_rusage([sys.executable, "-c", PAGETABLES, WORKLOAD])
    if rc != 0:
        raise SystemExit(f"page-table measurement failed ({rc})")
    info = json.loads(out.strip().splitlines()[-1])
    tables = int(info["tables"])
    wall, rss, rc, _ = _child_rusage([kpsim, "run", "--workload", WORKLOAD, "--json"])
    if rc not in (0, 1):
        raise SystemExit(f"kpsim run failed ({rc})")
    table_mem = tables * 4096
    bound = 1.5 * table_mem + 150 * MIB
    print(f"kpsim run --workload {WORKLOAD}: {wall:.2f} s wall, status {rc}")
    print(
        f"  peak RSS {rss / MIB:.1f} MiB ({(rss - floor) / MIB:.1f} MiB over the "
        f"{floor / MIB:.1f} MiB of `import kpsim.machine`)"
    )
    print(
        f"  simulated page tables at peak {tables} pages = {table_mem / MIB:.1f} MiB -> "
        f"bound 1.5x + 150 MiB = {bound / MIB:.1f} MiB: "
        f"{'ok' if rss <= bound else 'MISSED'} (RSS / bound {rss / bound:.2f})"
    )
    return {
        "fork 1G run, s wall": wall,
        "fork 1G run, peak RSS MiB": rss / MIB,
        "fork 1G run, RSS / bound (issue 19: <= 1)": rss / bound,
    }


if __name__ == "__main__":
    main()
