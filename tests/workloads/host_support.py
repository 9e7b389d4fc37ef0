"""Shared by the host tests: skip unless the host kernel can answer; read '# expect' notes."""

import re
from pathlib import Path

import pytest

from kpsim.workloads.host import HostUnavailable, check_host

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "steps"


def _why_not() -> str | None:
    try:
        check_host()
    except HostUnavailable as err:
        return str(err)
    return None


WHY_NOT = _why_not()
needs_host = pytest.mark.skipif(WHY_NOT is not None, reason=f"host kernel cannot answer: {WHY_NOT}")

_EXPECT = re.compile(
    r"^\[\[step\]\]\s*#\s*expect\s+(any|[+-]\d+)(?:,\s*child\s+(any|[+-]\d+))?\s*$"
)


def expectations(path: Path) -> list[tuple[int | None, int | None]]:
    """(delta, child delta) from each step's '# expect' note; None for 'any' or no child.

    Use :func:`any_child` to tell a fork's 'child any' from a step without a child."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("[[step]]"):
            m = _EXPECT.match(line.strip())
            assert m is not None, f"{path.name}: step line without '# expect': {line!r}"
            delta = None if m.group(1) == "any" else int(m.group(1))
            child = m.group(2)
            out.append((delta, None if child in (None, "any") else int(child)))
    return out


def any_child(path: Path) -> list[bool]:
    """Per step: its note says 'child any' (the child's count depends on the layout)."""
    return [
        "child any" in line for line in path.read_text().splitlines() if line.startswith("[[step]]")
    ]


def deltas_and_notes(path: Path, results) -> tuple[list, list]:
    """(got, want): each step's (delta, child delta) and what its '# expect' note says,
    with 'any' standing for whatever the step gave."""
    got = [(r.delta, r.child_delta) for r in results]
    want = [
        (r.delta if d is None else d, r.child_delta if free else c)
        for (d, c), r, free in zip(expectations(path), results, any_child(path), strict=True)
    ]
    return got, want
