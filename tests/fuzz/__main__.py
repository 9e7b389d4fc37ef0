"""``python -m tests.fuzz [--cases N] [--seed S] [--atheris] [FORMAT...]``: the long fuzz run.

Without ``--atheris``: the seeded mutational fuzzer of :mod:`tests.fuzz.harness`, N
cases per format, printing the outcomes per format and every failure (exit 1 if any).
With ``--atheris`` (needs the ``fuzz`` extra): libFuzzer's coverage-guided mutation
through the same judge, ``-runs=N`` per format, each format in its own process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from tests.fuzz.harness import FORMATS, Tally, fuzz

CHUNK = 5000


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz")
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--atheris", action="store_true")
    ap.add_argument(
        "--real-every",
        type=int,
        default=0,
        metavar="N",
        help="also run every Nth accepted case for real (a CPU budget each)",
    )
    ap.add_argument(
        "--real-cpu",
        type=float,
        default=0.5,
        metavar="S",
        help="the CPU seconds a real run may use (default 0.5)",
    )
    ap.add_argument("formats", nargs="*", metavar="FORMAT", help=", ".join(FORMATS))
    args = ap.parse_args(argv)
    status = 0
    for fmt in args.formats or FORMATS:
        t = time.perf_counter()
        if args.atheris:
            cmd = [sys.executable, "-m", "tests.fuzz.atheris_main", fmt, f"-runs={args.cases}",
                   f"-seed={args.seed + 1}"]  # fmt: skip
            rc = subprocess.run(cmd, check=False).returncode
            print(f"{fmt}: atheris exit {rc} ({time.perf_counter() - t:.0f} s)", flush=True)
            status = status or rc
            continue
        tally = Tally()
        done = 0
        while done < args.cases:  # in chunks (each its own seed), the totals printed as it goes
            n = min(CHUNK, args.cases - done)
            part = fuzz(fmt, n, args.seed * 100_003 + done, stop_on_failure=False,
                        real_every=args.real_every, real_cpu=args.real_cpu)  # fmt: skip
            tally.outcomes.update(part.outcomes)
            tally.failures += part.failures
            done += n
            if done < args.cases:
                print(f"{fmt}: {done} cases so far, {len(tally.failures)} failures", flush=True)
        dt = time.perf_counter() - t
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(tally.outcomes.items()))
        print(f"{fmt}: {tally.cases} cases in {dt:.0f} s ({tally.cases / dt:.0f}/s): {outcomes}",
              flush=True)  # fmt: skip
        for f in tally.failures:
            print(f"  FAILURE: {f}", flush=True)
        status = status or (1 if tally.failures else 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
