"""The compiled core's guard: a build is used only when it matches the sources.

(src/kpsim/_core.py, tools/build_core.py.) These run in both the compiled and the
pure-Python CI steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kpsim import _core


def _copy_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "kpsim"
    shutil.copytree(_core.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def test_digest_changes_with_any_covered_source(tmp_path: Path) -> None:
    pkg = _copy_package(tmp_path)
    before = _core.source_digest(pkg)
    assert before == _core.source_digest(pkg)  # deterministic
    tlb = pkg / "hw" / "arm64" / "tlb.py"
    tlb.write_text(tlb.read_text() + "\n# edited\n")
    after_hw = _core.source_digest(pkg)
    assert after_hw != before
    units = pkg / "units.py"  # not compiled, but its Final constants may be inlined
    units.write_text(units.read_text() + "\n")
    assert _core.source_digest(pkg) != after_hw


def test_digest_ignores_sources_outside_the_core(tmp_path: Path) -> None:
    pkg = _copy_package(tmp_path)
    before = _core.source_digest(pkg)
    cli = next((pkg / "cli").glob("*.py"))
    cli.write_text(cli.read_text() + "\n")
    assert _core.source_digest(pkg) == before


def _fake_build(build: Path, digest: str) -> None:
    build.mkdir(parents=True)
    (build / "m.so").write_bytes(b"")
    (build / _core.MANIFEST).write_text(json.dumps({"digest": digest, "modules": {"x": "m.so"}}))


def test_current_build_is_used_and_stale_one_is_not(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _fake_build(good, _core.source_digest())
    files, state = _core.check(good)
    assert state == "compiled" and files == {"x": good / "m.so"}
    stale = tmp_path / "stale"  # negative control: one digest bit off
    digest = _core.source_digest()
    _fake_build(stale, ("1" if digest[0] == "0" else "0") + digest[1:])
    files, state = _core.check(stale)
    assert files is None and state.startswith("pure (stale")


def test_missing_or_incomplete_build_is_pure(tmp_path: Path) -> None:
    assert _core.check(tmp_path / "none") == (None, "pure (no compiled build)")
    partial = tmp_path / "partial"
    _fake_build(partial, _core.source_digest())
    (partial / "m.so").unlink()
    assert _core.check(partial) == (None, "pure (incomplete build)")


def _state_in_subprocess(**env: str) -> str:
    code = (
        "import kpsim, kpsim._core as c, kpsim.hw.arm64.tlb as t; print(c.STATE, c.is_compiled(t))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_kpsim_pure_forces_python() -> None:
    assert _state_in_subprocess(KPSIM_PURE="1") == "pure (KPSIM_PURE set) False"


def test_state_says_what_was_loaded() -> None:
    state, compiled = _state_in_subprocess(KPSIM_PURE="").rsplit(" ", 1)
    assert (state == "compiled") == (compiled == "True")
    assert state == _core.check()[1]


def test_importing_kpsim_starts_no_blas_threads_and_leaves_the_environment() -> None:
    """numpy is imported with OpenBLAS held to one thread (its workers would spin beside
    the single-threaded model), and the variable is gone again afterwards, so the
    programs kpsim starts see the user's environment. Negative control: numpy imported
    first, on a host with more than one core, starts its worker threads."""
    import os
    import subprocess
    import sys

    probe = "import os, {m}; print(len(os.listdir('/proc/self/task')), " \
        "os.environ.get('OPENBLAS_NUM_THREADS'))"  # fmt: skip
    limits = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS")
    # a dask LocalCluster (the sweep's tests) sets these in its parent's environment
    env = {k: v for k, v in os.environ.items() if k not in limits}

    def threads(module: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", probe.format(m=module)], env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return out.split()

    assert threads("kpsim") == ["1", "None"]
    if (os.cpu_count() or 1) > 1:
        assert int(threads("numpy")[0]) > 1
