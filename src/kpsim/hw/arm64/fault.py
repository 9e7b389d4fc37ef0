"""Architectural faults as values (DESIGN.md, "Errors").

A :class:`Fault` carries what ESR_EL1 and FAR_EL1 carry for a synchronous abort:
the faulting address, the fault kind and table level, WnR, whether the access was an
instruction fetch, the exception level it came from, and ISS2.Overlay. It becomes an
exception (:class:`kpsim.errors.AccessFault`) only at the access API.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpsim.hw.arm64.esr import EC, FSC_TEXT, FaultKind, make_esr


@dataclass(frozen=True, slots=True)
class Fault:
    va: int
    kind: FaultKind
    level: int
    write: bool = False
    exec: bool = False
    el: int = 1
    overlay: bool = False

    @property
    def ec(self) -> EC:
        if self.exec:
            return EC.IABT_CUR if self.el == 1 else EC.IABT_LOW
        return EC.DABT_CUR if self.el == 1 else EC.DABT_LOW

    @property
    def esr(self) -> int:
        return make_esr(
            ec=self.ec, kind=self.kind, level=self.level, write=self.write, overlay=self.overlay
        )

    @property
    def far(self) -> int:
        return self.va

    def __str__(self) -> str:
        what = "exec" if self.exec else ("write" if self.write else "read")
        ov = ", overlay" if self.overlay else ""
        return (
            f"EL{self.el} {what} at {self.va:#018x}: level {self.level} "
            f"{FSC_TEXT[self.kind]}{ov} (ESR {self.esr:#018x})"
        )
