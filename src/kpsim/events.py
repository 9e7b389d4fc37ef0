"""Event counters and recorded kernel warnings.

A kernel ``WARN_ON`` is a recorded :class:`Warning` event, never an exception
(DESIGN.md, "Errors"). Counters are a plain ``dict[str, int]`` so that hot paths
increment them cheaply; :class:`Counters` adds snapshots and differences.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WarnEvent:
    """One ``WARN_ON`` the simulated kernel hit: where (function) and why."""

    function: str
    message: str


class Counters(dict[str, int]):
    """Named event counts; missing names read as zero."""

    def __missing__(self, key: str) -> int:
        return 0

    def add(self, name: str, n: int = 1) -> None:
        self[name] = self.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.items()))

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """Counts accumulated since ``before`` (a snapshot), zero entries dropped."""
        out = {k: v - before.get(k, 0) for k, v in self.items()}
        return {k: v for k, v in sorted(out.items()) if v}
