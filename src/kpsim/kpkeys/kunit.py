"""The kernel's KUnit suite ``kpkeys_hardened_pgtables``
(``mm/tests/kpkeys_hardened_pgtables_kunit.c``, v7 naming; spec §4.10).

Each case picks one page-table entry, writes its own value back with
``copy_to_kernel_nofault`` from the default context, and expects ``-EFAULT``: the
write must be stopped by the pkey hardware because the table page carries pkey 1.
Cases skip when kpkeys are not supported (no POE on arm64, no PKS on x86). With the
feature off every write lands, so every case fails: the suite can fail.

The kernel's test is generic C (``pgd_offset_k``, ``pud_offset``...); so is this one:
it walks with the arch's ``read_entry``/``next_offset``/``pxd_table``/``pxd_leaf`` and
finds the image through ``kimage_va``, so it runs on arm64 and x86 alike (issue 18).

Each check keeps what the exception handler saw for a blocked write (arm64: ESR_EL1
and FAR_EL1 of the fixed-up abort; x86: CR2 and the #PF error code,
:func:`copy_to_kernel_nofault_fault`) so that ``kpsim kunit`` can show why it was
blocked; the kernel's test only sees ``-EFAULT``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kpsim.errors import KpsimError
from kpsim.kpkeys.context import kpkeys_enabled
from kpsim.mm.gfp import GFP_KERNEL
from kpsim.mm.maccess import EFAULT, copy_to_kernel_nofault_fault
from kpsim.mm.process import kunit_vm_mmap

LEVELS = {1: "pud", 2: "pmd", 3: "pte"}
#: the pkey hardware each architecture's kpkeys needs (the skip message names it)
PKEY_HARDWARE = {"arm64": "POE", "x86": "PKS"}


@dataclass
class Check:
    """One ``copy_to_kernel_nofault()`` of an entry onto itself: the entry's level and
    linear-map address, the return value, and the fault (ESR, FAR) if it was blocked."""

    level: str
    result: int
    expected: int = EFAULT
    entry_va: int = 0
    esr: int | None = None
    far: int | None = None
    far_leaf: tuple[int, int] | None = None  # (level, descriptor) mapping FAR at the fault
    pf_error: int | None = None  # x86: the #PF error code (FAR is then CR2)

    def as_dict(self) -> dict[str, object]:
        leaf = self.far_leaf
        out: dict[str, object] = {
            "level": self.level,
            "result": self.result,
            "expected": self.expected,
            "entry_va": f"{self.entry_va:#x}",
            "esr": None if self.esr is None else f"{self.esr:#018x}",
            "far": None if self.far is None else f"{self.far:#018x}",
            "far_leaf": None if leaf is None else {"level": leaf[0], "value": f"{leaf[1]:#018x}"},
        }
        if self.pf_error is not None:
            out["pf_error"] = f"{self.pf_error:#x}"
        return out


@dataclass
class Case:
    name: str
    status: str = "pass"
    message: str = ""
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "checks": [c.as_dict() for c in self.checks],
        }


def _entry_ptrs(arch: Any, addr: int) -> dict[int, int]:
    """Entry pointers (linear-map VAs) at levels 1-3 covering ``addr`` in swapper."""
    return _entry_ptrs_from(arch, arch.pgd_offset_k(addr), addr)


def _entry_ptrs_from(arch: Any, pgdp: int, addr: int) -> dict[int, int]:
    out = {}
    ptr = pgdp
    for level in (1, 2, 3):
        if not arch.pxd_table(arch.read_entry(ptr), level - 1):
            break
        ptr = arch.next_offset(ptr, addr, level)
        out[level] = ptr
    return out


def _leaf_of(arch: Any, addr: int) -> tuple[int, int] | None:
    """(level, descriptor) of the swapper leaf mapping ``addr`` now, or None."""
    ptr = arch.pgd_offset_k(addr)
    for level in range(4):
        value = arch.read_entry(ptr)
        if level == 3 or not arch.pxd_table(value, level):
            return (level, value) if arch.pxd_leaf(value, level) else None
        ptr = arch.next_offset(ptr, addr, level + 1)
    return None


def _probe(case: Case, arch: Any, ptrs: dict[int, int], levels: tuple[int, ...]) -> None:
    cpu = arch.cpu
    for level in levels:
        if level not in ptrs:
            case.status = "fail"
            case.message += f"no {LEVELS[level]} entry; "
            continue
        ptr = ptrs[level]
        ret, fault = copy_to_kernel_nofault_fault(cpu, ptr, arch.read_entry(ptr))
        check = Check(LEVELS[level], ret, entry_va=ptr)
        if fault is not None:
            _record_fault(check, arch, fault)
        case.checks.append(check)
        if ret != EFAULT:
            case.status = "fail"
            case.message += (
                f"Direct {LEVELS[level].upper()} write wasn't prevented "
                f"(write to {LEVELS[level]} entry at {ptr:#x} succeeded); "
            )


def _record_fault(check: Check, arch: Any, fault: Any) -> None:
    """What the handler saw: arm64's ESR_EL1 and FAR_EL1, or x86's CR2 and error code."""
    if hasattr(fault, "esr"):
        check.esr, check.far = fault.esr, fault.far
    else:
        check.far, check.pf_error = fault.cr2, fault.error_code
    check.far_leaf = _leaf_of(arch, check.far)


def write_direct_map_pgtables(m: Any, case: Case) -> None:
    arch = m.arch
    pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
    arch.set_direct_map_invalid_noflush(pfn)
    arch.set_direct_map_default_noflush(pfn)
    _probe(case, arch, _entry_ptrs(arch, arch.page_to_virt(pfn)), (1, 2, 3))
    m.k.page_alloc.free_pages(pfn, 0)


def write_kernel_image_pud(m: Any, case: Case) -> None:
    addr = m.arch.kimage_va(m.arch.kimage_pa + (12 << 20))
    _probe(case, m.arch, _entry_ptrs(m.arch, addr), (1,))


def write_kernel_vmalloc_pte(m: Any, case: Case) -> None:
    from kpsim.mm.vmalloc import vfree, vmalloc

    addr = vmalloc(m.k, 4096)
    _probe(case, m.arch, _entry_ptrs(m.arch, addr), (3,))
    vfree(m.k, addr)


def write_vmemmap_pmd(m: Any, case: Case) -> None:
    addr = m.arch.layout.page_to_virt_struct(m.mem.base >> 12)
    _probe(case, m.arch, _entry_ptrs(m.arch, addr), (2,))


def write_user_pmd(m: Any, case: Case) -> None:
    """A populated anonymous user mapping (``kunit_vm_mmap``): its PMD entry."""
    proc, addr = kunit_vm_mmap(m.k, 4096)
    pgdp = m.arch.pgd_offset_pgd(proc.mm.pgd_pa, addr)
    _probe(case, m.arch, _entry_ptrs_from(m.arch, pgdp, addr), (2,))
    proc.exit()


CASES: list[tuple[str, Callable[[Any, Case], None]]] = [
    ("write_direct_map_pgtables", write_direct_map_pgtables),
    ("write_kernel_image_pud", write_kernel_image_pud),
    ("write_kernel_vmalloc_pte", write_kernel_vmalloc_pte),
    ("write_vmemmap_pmd", write_vmemmap_pmd),
    ("write_user_pmd", write_user_pmd),
]


def run_suite(m: Any) -> dict[str, object]:
    """Run the five cases on machine ``m``; the result in the ``kpsim kunit --json`` shape."""
    cases = []
    for name, fn in CASES:
        case = Case(name)
        if not kpkeys_enabled(m.arch):
            case.status = "skip"
            hw = PKEY_HARDWARE.get(getattr(m.arch, "name", "arm64"), "pkey hardware")
            case.message = f"kpkeys not supported (no {hw})"
        else:
            try:
                fn(m, case)
            except KpsimError as exc:  # a crashing case fails, as in KUnit
                case.status = "fail"
                case.message += f"{type(exc).__name__}: {exc}"
        case.message = case.message.rstrip("; ")
        cases.append(case)
    return {
        "suite": "kpkeys_hardened_pgtables",
        "cases": [c.as_dict() for c in cases],
        "passed": sum(c.status == "pass" for c in cases),
        "failed": sum(c.status == "fail" for c in cases),
        "skipped": sum(c.status == "skip" for c in cases),
    }
