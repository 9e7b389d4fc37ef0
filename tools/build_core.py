"""Build kpsim's compiled core: the modules in ``kpsim._core.COMPILED``, compiled by mypyc
from the same Python source, into ``build/core/`` (see ``src/kpsim/_core.py``).

    python tools/build_core.py [--force] [--opt N] [--jobs N]

Does nothing when the build's manifest already matches the sources. A failed build
prints one line and exits 0 (the package then runs as pure Python); the compiler's
output is kept in ``build/core-build.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _load_core():  # type: ignore[no-untyped-def]
    """kpsim._core by file, without importing kpsim (which would install the finder)."""
    spec = importlib.util.spec_from_file_location("_kpsim_core_build", SRC / "kpsim" / "_core.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _module_name(rel: Path) -> str:
    """kpsim/hw/tlb.cpython-311-x86_64-linux-gnu.so -> kpsim.hw.tlb"""
    parts = list(rel.parts)
    parts[-1] = parts[-1].split(".", 1)[0]
    return ".".join(parts)


def build(core, opt: str, jobs: int, log: io.StringIO) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Compile into build/core.tmp/lib; return module -> file (relative to lib)."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    tmp = ROOT / "build" / "core.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    lib = tmp / "lib"
    paths = [str(Path(*name.split(".")).with_suffix(".py")) for name in core.COMPILED]
    cwd = os.getcwd()
    os.chdir(SRC)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            ext = mypycify(
                paths,
                opt_level=opt,
                debug_level="0",
                target_dir=str(tmp / "c"),
                multi_file=True,
            )
            dist = Distribution({"name": "kpsim-core", "ext_modules": ext})
            dist.script_name = "build_core.py"
            dist.script_args = [
                "build_ext",
                "--build-lib",
                str(lib),
                "--build-temp",
                str(tmp / "obj"),
                "--parallel",
                str(jobs),
            ]
            dist.parse_command_line()
            dist.run_commands()
    finally:
        os.chdir(cwd)
    return {
        _module_name(p.relative_to(lib)): str(p.relative_to(lib)) for p in sorted(lib.rglob("*.so"))
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--opt", default="2", help="C optimisation level (default 2)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel gcc jobs")
    args = ap.parse_args()
    core = _load_core()
    out = ROOT / "build" / "core"
    digest = core.source_digest()
    manifest = core.read_manifest(out)
    if not args.force and manifest is not None and manifest.get("digest") == digest:
        print("kpsim: compiled core up to date")
        return 0
    t0 = time.monotonic()
    log = io.StringIO()
    try:
        modules = build(core, args.opt, args.jobs, log)
        missing = [m for m in core.COMPILED if m not in modules]
        if missing:
            raise RuntimeError(f"no compiled file for {', '.join(missing)}")
    except BaseException as exc:  # a failed build must never stop make test / make demo
        (ROOT / "build").mkdir(exist_ok=True)
        (ROOT / "build" / "core-build.log").write_text(log.getvalue() + f"\n{exc!r}\n")
        shutil.rmtree(out, ignore_errors=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"kpsim: compiled core build failed ({first}; see build/core-build.log); "
            "running pure Python",
            file=sys.stderr,
        )
        return 0
    (ROOT / "build" / "core-build.log").write_text(log.getvalue())
    lib = ROOT / "build" / "core.tmp" / "lib"
    seconds = time.monotonic() - t0
    (lib / core.MANIFEST).write_text(
        json.dumps(
            {"digest": digest, "modules": modules, "opt": args.opt, "seconds": round(seconds, 1)},
            indent=1,
        )
    )
    old = ROOT / "build" / "core.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    lib.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(ROOT / "build" / "core.tmp", ignore_errors=True)
    print(f"kpsim: compiled core built in {seconds:.1f} s ({len(core.COMPILED)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
