"""Workload benchmarks (issue 7): how long each built-in workload takes to simulate.

Each workload runs with the feature off, on with batching and on without, on a fresh
machine; boot time is excluded. Printed per run: wall seconds, counted events (sum of
every counter of the measured window) and events per second. The native baseline,
measured in the same run, is a bare Python loop doing one dict increment per event:
the ratio says how many such increments one simulated event costs. micromm at 1 GiB
is what ``kpsim reproduce`` runs; the ``run`` sizes are ``kpsim run``'s defaults.
Prints, never asserts.
"""

from __future__ import annotations

import time
from typing import Any

from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.workloads.registry import run_workload

CONFIGS = (("off", False, True), ("on+batch", True, True), ("on-batch", True, False))
CASES: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("micromm.fork", {"size": "1G", "h": 0}, "3G"),
    ("micromm.fork", {"size": "1G", "h": 1}, "3G"),
    ("micromm.munmap", {"size": "1G", "h": 0}, "3G"),
    ("micromm.munmap", {"size": "1G", "h": 1}, "3G"),
    ("micromm.fork", {"size": "64M"}, "512M"),
    ("micromm.munmap", {"size": "64M"}, "512M"),
    ("vmalloc.fix_size_alloc", {"pages": 256, "loops": 200}, "512M"),
    ("vmalloc.random_size_alloc", {"loops": 200}, "512M"),
    ("vmalloc.vm_map_ram", {"loops": 200}, "512M"),
    ("kernbench", {}, "512M"),
)
_IGNORED = {"PageTables", "other_cycles", "syscall"}


def native_per_event(n: int = 2_000_000) -> float:
    d: dict[str, int] = {}
    t0 = time.perf_counter()
    for _ in range(n):
        d["x"] = d.get("x", 0) + 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    base = native_per_event()
    print(f"native baseline: one dict increment = {base * 1e9:.1f} ns")
    print(f"{'workload':26} {'params':22} {'config':9} {'seconds':>8} {'events':>11} "
          f"{'events/s':>10} {'x native':>9}")  # fmt: skip
    total = 0.0
    for name, params, memory in CASES:
        shown = ",".join(f"{k}={v}" for k, v in params.items())
        for label, hardened, batching in CONFIGS:
            cfg = MachineConfig(memory=memory, hardened_pgtables=hardened, batching=batching)
            m = Machine.boot(cfg)
            t0 = time.perf_counter()
            counts = run_workload(m, name, params)
            dt = time.perf_counter() - t0
            total += dt
            events = sum(abs(v) for k, v in counts.items() if k not in _IGNORED)
            rate = events / dt if dt else float("inf")
            ratio = (dt / events) / base if events else float("nan")
            print(f"{name:26} {shown:22} {label:9} {dt:8.2f} {events:11d} {rate:10.3g} "
                  f"{ratio:9.1f}")  # fmt: skip
    print(f"total simulated time: {total:.1f} s")
