"""Soak (issue 17): random kernel operations on every allocator and linear-map policy.

Each policy (the allocators on a PTE-mapped linear map, the block allocators on a
block-mapped one) runs :func:`kpsim.workloads.soak.soak` on a fresh 512 MiB machine:
faults, fork, exec, exit, munmap, mremap, mprotect, madvise, vmalloc and vm_map_ram
churn, set_memory changes, memory pressure, CPU migration; the audit runs every
ops/20 operations and after a full teardown, which also counts the free pages.

Variants per policy (``KPSIM_SOAK_VARIANTS``, default ``off,on,inject``):

- ``off``: kpkeys_hardened_pgtables off, the baseline measured in the same run;
- ``on``: the feature on; the figure is its operations per second over ``off``'s;
- ``inject``: the feature on with every fault-injection site armed
  (``KPSIM_SOAK_FAIL``, default ``probability=5,times=-1``): failures injected and
  survived, operations that met -ENOMEM.

Every row prints the audit violations (0 expected) and the pages lost (0 expected).
``KPSIM_SOAK_OPS`` sets the operations per run (default 4000; the issue's soak is
``KPSIM_SOAK_OPS=1000000 python -m benchmarks --mode here soak``, about 3 CPU minutes
per policy and variant with the compiled core). ``KPSIM_SOAK_AUDIT_EVERY`` overrides the
audit interval, ``KPSIM_SOAK_POLICIES=pba/pte,reserve/block`` runs some policies only
(to share them out between processes); from 10^5 operations (or with
``KPSIM_SOAK_PROGRESS=1``) every audit prints a progress line with the figures so far.
Under injection the vectorised fault path stays on: it draws each page's
``fail_page_alloc`` decision in the loop's order (``FaultAttr.alloc_page_run``).
``KPSIM_SOAK_NO_BATCH=1`` turns the vectorised user-fault path off (it is what the soak
found wrong: a stale TLB entry, then a page-table page written as a user page).
"""

from __future__ import annotations

import os
import time

from kpsim.audit.invariants import audit
from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.mm.fault_inject import SITES
from kpsim.workloads.soak import soak

POLICIES = (
    ("minimal", "pte"),
    ("pba", "pte"),
    ("grouped", "pte"),
    ("reserve", "pte"),
    ("pba", "block"),
    ("reserve", "block"),
)


def run(
    allocator: str,
    linear_map: str,
    variant: str,
    ops: int,
    spec: str,
    every: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    fail = {f"fail_{s}": spec for s in SITES} if variant == "inject" else {}
    cfg = MachineConfig(memory="512M", linear_map=linear_map, allocator=allocator,
                        hardened_pgtables=variant != "off", seed=1, **fail)  # fmt: skip
    m = Machine.boot(cfg)
    found: list[object] = []
    t, cpu = time.perf_counter(), time.process_time()
    every = every or max(1, ops // 20)

    def check(phase: str) -> None:
        found.extend(audit(m))
        if progress:  # a long soak: the figures so far, in case it is cut short
            done = ops if phase == "end" else int(phase.split()[1])
            fi = m.k.fault_inject
            print(f"    {allocator}/{linear_map} {variant}: {phase}: {done} ops, "
                  f"{done / (time.perf_counter() - t):.0f} ops/s "
                  f"({done / (time.process_time() - cpu):.0f} per CPU second), "
                  f"{fi.injected if fi is not None else 0} injected, "
                  f"{len(found)} violations so far", flush=True)  # fmt: skip

    res = soak(m, ops, seed=7, audit_every=every, check=check)
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    fi = m.k.fault_inject
    return {
        "ops": float(res.total),
        "seconds": dt,
        "ops_per_s": res.total / dt if dt else 0.0,
        "ops_per_cpu_s": res.total / dcpu if dcpu else 0.0,
        "injected": float(fi.injected if fi is not None else 0),
        "enomem": float(sum(res.enomem.values())),
        "audits": float(res.audits),
        "violations": float(len(found)),
        "lost": float(res.balance["lost"]),
    }


def main() -> dict[str, float]:
    if os.environ.get("KPSIM_SOAK_NO_BATCH"):  # one fault at a time (mm/fault_batch.py off)
        from kpsim.mm import fault_batch

        fault_batch.BATCH = False
        print("soak: the vectorised user-fault path is off (KPSIM_SOAK_NO_BATCH)")
    ops = int(os.environ.get("KPSIM_SOAK_OPS", "4000"))
    spec = os.environ.get("KPSIM_SOAK_FAIL", "probability=5,times=-1")
    variants = os.environ.get("KPSIM_SOAK_VARIANTS", "off,on,inject").split(",")
    every = int(os.environ.get("KPSIM_SOAK_AUDIT_EVERY", "0")) or max(1, ops // 20)
    progress = ops >= 100_000 or bool(os.environ.get("KPSIM_SOAK_PROGRESS"))
    chosen = os.environ.get("KPSIM_SOAK_POLICIES")  # e.g. "pba/pte,reserve/block"
    policies = [p for p in POLICIES if chosen is None or "/".join(p) in chosen.split(",")]
    print(f"soak: {ops} random operations per run, 512M machine, audit every {every}")
    print(f"  injection spec (every site): {spec}")
    head = f"  {'policy':<14} {'variant':<7} {'ops/s':>9} {'ops/cpu-s':>9} {'vs off':>7}"
    head += f" {'injected':>9}"
    print(head + f" {'-ENOMEM':>8} {'audits':>6} {'violations':>10} {'lost':>5}")
    out: dict[str, float] = {}
    total_injected = total_viol = total_lost = 0.0
    for allocator, lm in policies:
        base = None
        for v in variants:
            try:
                r = run(allocator, lm, v, ops, spec, every, progress)
            except Exception as e:  # a model error the soak found: reported, counted
                print(f"  {allocator + '/' + lm:<14} {v:<7} MODEL ERROR {type(e).__name__}: {e}")
                total_viol += 1
                continue
            if v == "off":
                base = r["ops_per_s"]
            ratio = f"{r['ops_per_s'] / base:>7.2f}" if base and v != "off" else f"{'-':>7}"
            print(
                f"  {allocator + '/' + lm:<14} {v:<7} {r['ops_per_s']:>9.0f} "
                f"{r['ops_per_cpu_s']:>9.0f} {ratio} "
                f"{r['injected']:>9.0f} {r['enomem']:>8.0f} {r['audits']:>6.0f} "
                f"{r['violations']:>10.0f} {r['lost']:>5.0f}",
                flush=True,
            )
            total_injected += r["injected"]
            total_viol += r["violations"]
            total_lost += r["lost"]
            if v == "on" and base:
                out[f"{allocator}/{lm} on/off ops/s"] = r["ops_per_s"] / base
    print(f"  total: {total_injected:.0f} injected failures survived, "
          f"{total_viol:.0f} audit violations, {total_lost:.0f} pages lost")  # fmt: skip
    out["injected"] = total_injected
    out["violations"] = total_viol
    out["pages lost"] = total_lost
    return out


if __name__ == "__main__":
    main()
