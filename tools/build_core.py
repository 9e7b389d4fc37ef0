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
import json
import os
import shutil
import sys
import time
from pathlib import Path

PHASES: dict[str, float] = {}  # seconds spent in mypyc (type check, IR, C) and in gcc
ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
#: Object files by what they were compiled from (an edit recompiles only the C files it
#: changed: usually the edited module's, plus the headers' dependants when declarations
#: changed).
OBJ_CACHE = ROOT / "build" / "core-objcache"


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


@contextlib.contextmanager
def _fds_to(path: Path):  # type: ignore[no-untyped-def]
    """Send this process's (and its children's: gcc) stdout and stderr to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _object_key(src: str, args: list[str]) -> str:
    """What an object file depends on: its C file, every header mypyc generated beside
    it, the mypyc version (its runtime headers) and the compiler arguments."""
    import hashlib

    import mypyc

    h = hashlib.sha256()
    h.update(Path(src).read_bytes())
    for hdr in sorted(Path(src).parent.glob("*.h")):
        h.update(hdr.name.encode() + b"\0" + hdr.read_bytes())
    h.update(repr((getattr(mypyc, "__file__", ""), _mypy_version(), args)).encode())
    return h.hexdigest()


def _mypy_version() -> str:
    from mypy.version import __version__

    return str(__version__)


def _prune_cache(keep: int = 300) -> None:
    """Keep the ``keep`` most recently written cached objects."""
    files = sorted(OBJ_CACHE.glob("*.o"), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files[keep:]:
        f.unlink(missing_ok=True)


def _parallel_compile(jobs: int) -> None:
    """Compile an extension's C files ``jobs`` at a time (distutils compiles them one by
    one; mypyc's shared library is one extension of many files)."""
    from concurrent.futures import ThreadPoolExecutor

    from setuptools._distutils import ccompiler

    def compile_(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,  # type: ignore[no-untyped-def]
                 extra_preargs=None, extra_postargs=None, depends=None):  # fmt: skip
        macros, objects, extra, pp_opts, build = self._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs
        )
        cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj: str) -> None:
            src, ext = build[obj]
            key = _object_key(src, [*cc_args, *extra, *pp_opts])
            cached = OBJ_CACHE / f"{key}.o"
            if cached.is_file():
                Path(obj).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, obj)
                PHASES["cached_objects"] = PHASES.get("cached_objects", 0) + 1
                return
            self._compile(obj, src, ext, cc_args, extra, pp_opts)
            OBJ_CACHE.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(obj, cached.with_suffix(".tmp"))
            cached.with_suffix(".tmp").rename(cached)

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, objects))
        return objects

    ccompiler.CCompiler.compile = compile_  # type: ignore[method-assign]


def build(core, opt: str, jobs: int, log: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Compile into build/core.tmp/lib; return module -> file (relative to lib)."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    tmp = ROOT / "build" / "core.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    lib = tmp / "lib"
    paths = [str(Path(*name.split(".")).with_suffix(".py")) for name in core.COMPILED]
    _parallel_compile(jobs)
    cwd = os.getcwd()
    os.chdir(SRC)
    try:
        with _fds_to(log):
            t0 = time.monotonic()
            ext = mypycify(
                paths,
                opt_level=opt,
                debug_level="0",
                target_dir=str(tmp / "c"),
                multi_file=True,
            )
            t1 = time.monotonic()
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
            PHASES.update(mypyc=round(t1 - t0, 1), cc=round(time.monotonic() - t1, 1))
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
    (ROOT / "build").mkdir(exist_ok=True)
    log = ROOT / "build" / "core-build.log"
    log.write_text("")
    try:
        modules = build(core, args.opt, args.jobs, log)
        missing = [m for m in core.COMPILED if m not in modules]
        if missing:
            raise RuntimeError(f"no compiled file for {', '.join(missing)}")
    except BaseException as exc:  # a failed build must never stop make test / make demo
        with open(log, "a") as f:
            f.write(f"\n{exc!r}\n")
        shutil.rmtree(out, ignore_errors=True)
        errors = [ln for ln in log.read_text().splitlines() if " error: " in ln or ": error:" in ln]
        first = errors[0] if errors else (str(exc).strip() or type(exc).__name__)
        print(
            f"kpsim: compiled core build failed ({first}; see build/core-build.log); "
            "running pure Python",
            file=sys.stderr,
        )
        return 0
    lib = ROOT / "build" / "core.tmp" / "lib"
    seconds = time.monotonic() - t0
    (lib / core.MANIFEST).write_text(
        json.dumps(
            {
                "digest": digest,
                "modules": modules,
                "opt": args.opt,
                "seconds": round(seconds, 1),
                "phases": PHASES,
            },
            indent=1,
        )
    )
    old = ROOT / "build" / "core.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    lib.rename(out)
    _prune_cache()
    shutil.rmtree(ROOT / "build" / "core.tmp", ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    print(
        f"kpsim: compiled core built in {seconds:.1f} s ({len(core.COMPILED)} modules; "
        f"mypyc {PHASES.get('mypyc', 0):.1f} s, gcc -O{args.opt} {PHASES.get('cc', 0):.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
