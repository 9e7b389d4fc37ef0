"""Random steps files for ``kpsim conform``: sequences nobody wrote by hand.

:func:`random_steps` draws a sequence of mmap (fixed, fixed_noreplace, populate,
shared), touch, munmap, mprotect, madvise (dontneed, hugepage, nohugepage,
dontfork, wipeonfork), mremap (fixed moves) and fork steps over regions placed next
to 2 MiB, 1 GiB and 512 GiB boundaries, deterministic for a seed. Some drawn steps
are invalid (a touch of memory a munmap removed, an mremap whose source is gone);
:func:`run_valid` drops each step a target refuses and runs the rest, so that host
and model can then be compared on the same valid sequence. Every step carries
``# expect any``: what the rules predict is what the host says.
"""

from __future__ import annotations

import random
import re
from typing import Any

from kpsim.errors import InputError
from kpsim.workloads.steps import StepResult, StepTarget, parse_steps, run_steps

M, G, T = 1 << 20, 1 << 30, 1 << 40
#: region bases just below or above slot boundaries at every level
BASES = (16 * T, 32 * T - 4 * M, 48 * T + G - 3 * M, 64 * T + 5 * M)
RawStep = tuple[str, dict[str, Any]]


def draw(seed: int, count: int = 24) -> list[RawStep]:
    """``count`` random steps (op and fields) for ``seed``."""
    r = random.Random(seed)
    steps: list[RawStep] = []
    sizes: dict[str, int] = {}
    for _ in range(count):
        if not sizes or r.random() < 0.2:
            name = f"R{len(sizes)}"
            length = r.choice((M, 2 * M, 3 * M, 4 * M, 6 * M, 8 * M))
            flags = [r.choice(("fixed_noreplace", "fixed", "fixed")), "noreserve"]
            flags += [f for f, p in (("populate", 0.15), ("shared", 0.1)) if r.random() < p]
            base = r.choice(BASES) + r.randrange(8) * (M // 2)
            prot = r.choice(("rw", "rw", "rw", "r"))
            steps.append(
                (
                    "mmap",
                    dict(name=name, addr=hex(base), length=hex(length), prot=prot, flags=flags),
                )
            )
            sizes[name] = length
            continue
        name = r.choice(sorted(sizes))
        size = sizes[name]
        off = r.randrange(size // (M // 2)) * (M // 2)
        span = dict(
            region=name,
            offset=hex(off),
            length=hex(r.randrange(1, (size - off) // (M // 2) + 1) * (M // 2)),
        )
        c = r.random()
        if c < 0.4:
            stride = r.choice((4096, 256 << 10, M, 2 * M))
            steps.append(
                (
                    "touch",
                    dict(span, stride=hex(stride), access=r.choice(("write", "write", "read"))),
                )
            )
        elif c < 0.5:
            steps.append(("munmap", span))
        elif c < 0.6:
            steps.append(("mprotect", dict(span, prot=r.choice(("r", "rw", "none", "rw")))))
        elif c < 0.8:
            advice = r.choice(
                ("dontneed", "dontneed", "hugepage", "nohugepage", "dontfork", "wipeonfork")
            )
            steps.append(("madvise", dict(span, advice=advice)))
        elif c < 0.9:
            dest = r.choice(BASES) + 80 * T + r.randrange(8) * (M // 2)
            steps.append(("mremap", dict(region=name, new_length=hex(size), new_addr=hex(dest))))
        else:
            steps.append(("fork", {}))
    return steps


def render(steps: list[RawStep]) -> str:
    """The steps as a steps file (TOML)."""
    out = []
    for op, fields in steps:
        out.append("[[step]]  # expect any" + (", child any" if op == "fork" else ""))
        out.append(f'op = "{op}"')
        for key, value in fields.items():
            if isinstance(value, list):
                out.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
            else:
                out.append(f'{key} = "{value}"')
        out.append("")
    return "\n".join(out)


_STEP = re.compile(r"step (\d+) \(")


def run_valid(
    steps: list[RawStep], make_target: Any, *, attempts: int = 16
) -> tuple[list[RawStep], list[StepResult]]:
    """Run ``steps`` on targets from ``make_target()``, dropping each step a target
    refuses (and, for a refused mmap, every later use of its name), until a run
    completes; return the steps that ran and their results."""
    for _ in range(attempts):
        target: StepTarget = make_target()
        try:
            return steps, run_steps(parse_steps(render(steps)), target)
        except InputError as err:
            found = _STEP.search(err.problem)
            if found is None:
                raise
            op, fields = steps[int(found.group(1)) - 1]
            if op == "mmap":
                gone = fields["name"]
                steps = [s for s in steps if gone not in (s[1].get("name"), s[1].get("region"))]
            else:
                del steps[int(found.group(1)) - 1]
        finally:
            target.close()
    raise InputError(f"no valid sequence after {attempts} attempts")
