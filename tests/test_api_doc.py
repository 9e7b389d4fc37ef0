"""The Python API: ``kpsim`` exports its public names, and docs/api.md is generated
from their docstrings by tools/api_doc.py and is current."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import kpsim

ROOT = Path(__file__).resolve().parent.parent


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("api_doc", ROOT / "tools" / "api_doc.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kpsim_exports_boot_machine_and_the_errors() -> None:
    """``from kpsim import *`` gives boot, Machine, MachineConfig and the error tree,
    each a real object with a docstring; the errors share the root KpsimError."""
    ns: dict[str, object] = {}
    exec("from kpsim import *", ns)
    names = {n for n in ns if not n.startswith("__")}
    assert names == set(kpsim.__all__)
    assert {"boot", "Machine", "MachineConfig", "KpsimError", "AccessFault"} <= names
    for name in kpsim.__all__:
        assert inspect.getdoc(getattr(kpsim, name)), name
    errors = [getattr(kpsim, n) for n in kpsim.__all__ if n.endswith(("Error", "Fault"))]
    errors.append(kpsim.OutOfMemory)
    assert all(issubclass(e, kpsim.KpsimError) for e in errors)


def test_the_exports_work_as_documented() -> None:
    """kpsim.boot gives a kpsim.Machine; a stray write to a page table raises
    kpsim.AccessFault; with the feature off the same write lands (negative control)."""
    for hardened, blocked in ((True, True), (False, False)):
        m = kpsim.boot(memory="256M", hardened_pgtables=hardened)
        assert isinstance(m, kpsim.Machine) and isinstance(m.config, kpsim.MachineConfig)
        arch = m.arch
        va = arch.page_to_virt(m.mem.base >> 12)
        pudp = arch.pud_offset(arch.pgd_offset_k(va), va)
        try:
            m.hw.cpus[0].store(pudp, arch.read_entry(pudp))
            raised = False
        except kpsim.AccessFault:
            raised = True
        assert raised is blocked


def test_unknown_attribute_is_an_attribute_error() -> None:
    """A name kpsim does not export is an AttributeError naming it."""
    try:
        kpsim.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("no AttributeError")


def test_api_page_is_generated_and_current() -> None:
    """docs/api.md equals what tools/api_doc.py renders now: a section per export."""
    gen = _generator()
    text = gen.render()
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == text
    for name in kpsim.__all__:
        assert f"`kpsim.{name}" in text
    assert gen.main(["--check"]) == 0
