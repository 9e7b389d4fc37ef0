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

_EXPECT = re.compile(r"^\[\[step\]\]\s*#\s*expect\s+(any|[+-]\d+)(?:,\s*child\s+([+-]\d+))?\s*$")


def expectations(path: Path) -> list[tuple[int | None, int | None]]:
    """(delta, child delta) from each step's '# expect' note; None for 'any' or no child."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("[[step]]"):
            m = _EXPECT.match(line.strip())
            assert m is not None, f"{path.name}: step line without '# expect': {line!r}"
            delta = None if m.group(1) == "any" else int(m.group(1))
            out.append((delta, None if m.group(2) is None else int(m.group(2))))
    return out
