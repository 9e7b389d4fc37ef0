"""The compiled core: the hot modules built with mypyc from this same Python source.

There is one implementation, the Python in ``src/kpsim``. ``make build`` (run by
``make test`` and ``make demo``; ``tools/build_core.py``) compiles the modules named in
``COMPILED`` with mypyc into ``build/core/`` beside ``src/`` and writes
``build/core/manifest.json`` with a digest of the sources it compiled (``SOURCES``: the
compiled modules and every module they can see types or constants of). Nothing compiled
lives in ``src``, and nothing compiled is committed.

At ``import kpsim`` (``install``, called first thing by ``kpsim/__init__.py``) the
digest of the sources as they are now is compared with the manifest's. Only when they
agree is a finder put in front of ``sys.meta_path`` that loads the compiled modules;
otherwise every module is the ``.py`` file, and a stale build says so in one line on
stderr. So a compiled module never shadows an edited ``.py`` file.

``KPSIM_PURE=1`` forces pure Python (the CI's pure-Python step, the benchmarks'
side-by-side figures). ``STATE`` says which one this process runs.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: The modules mypyc compiles (the hot paths: hardware model, the user mm's fault, zap
#: and fork paths, and the arch layers between them with the arch-neutral helpers they are
#: built on. Both arches are compiled: mypyc checks ``self`` of a compiled non-native
#: class's method against the compiled subclasses it knows, so an interpreted subclass of
#: ``kpsim.arch.generic`` (an uncompiled x86 mixin) would fail that check at run time).
COMPILED: tuple[str, ...] = (
    "kpsim.hw.physmem",
    "kpsim.hw.arm64.descriptors",
    "kpsim.hw.arm64.esr",
    "kpsim.hw.arm64.fault",
    "kpsim.hw.arm64.frame_arena",
    "kpsim.hw.arm64.mmu",
    "kpsim.hw.arm64.por",
    "kpsim.hw.arm64.tlb",
    "kpsim.hw.arm64.cpu",
    "kpsim.hw.arm64.system",
    "kpsim.mm.fault_batch",
    "kpsim.mm.folio",
    "kpsim.mm.fork",
    "kpsim.mm.kernel",
    "kpsim.mm.memory",
    "kpsim.mm.mm_types",
    "kpsim.mm.mmap",
    "kpsim.mm.mmu_gather",
    "kpsim.mm.page",
    "kpsim.mm.page_alloc",
    "kpsim.mm.pcp",
    "kpsim.mm.pgtable",
    "kpsim.mm.process",
    "kpsim.mm.sched",
    "kpsim.arch.generic.base",
    "kpsim.arch.generic.entry",
    "kpsim.arch.generic.kpkeys",
    "kpsim.arch.generic.lazy_mmu",
    "kpsim.arch.generic.pgtable",
    "kpsim.arch.generic.tlbflush",
    "kpsim.arch.arm64.arch",
    "kpsim.arch.arm64.base",
    "kpsim.arch.arm64.entry",
    "kpsim.arch.arm64.kpkeys",
    "kpsim.arch.arm64.lazy_mmu",
    "kpsim.arch.arm64.linear_map_stats",
    "kpsim.arch.arm64.memory",
    "kpsim.arch.arm64.mmu",
    "kpsim.arch.arm64.pageattr",
    "kpsim.arch.arm64.pgtable",
    "kpsim.arch.arm64.pgtable_user",
    "kpsim.arch.arm64.setup",
    "kpsim.arch.arm64.tlbflush",
    "kpsim.arch.arm64.vmalloc_arch",
    "kpsim.arch.x86.arch",
    "kpsim.arch.x86.base",
    "kpsim.arch.x86.direct_map_stats",
    "kpsim.arch.x86.init",
    "kpsim.arch.x86.kpkeys",
    "kpsim.arch.x86.lazy_mmu",
    "kpsim.arch.x86.memory",
    "kpsim.arch.x86.pgtable",
    "kpsim.arch.x86.pgtable_user",
    "kpsim.arch.x86.set_memory",
    "kpsim.arch.x86.tlbflush",
    "kpsim.arch.x86.vmalloc_arch",
    "kpsim.workloads.trace",
)

#: Directories (relative to ``src/kpsim``) and files whose sources the digest covers: the
#: compiled modules and everything they import (mypyc may inline another module's
#: ``Final`` constants, so an edit there also makes the build stale).
SOURCE_DIRS: tuple[str, ...] = ("hw", "mm", "arch/generic", "arch/arm64", "arch/x86")
SOURCE_FILES: tuple[str, ...] = (
    "errors.py",
    "units.py",
    "events.py",
    "_core.py",
    "workloads/trace.py",
)

PACKAGE_DIR = Path(__file__).resolve().parent
#: ``build/core`` of the checkout this package was imported from (``src/kpsim/..``).
BUILD_DIR = PACKAGE_DIR.parent.parent / "build" / "core"
MANIFEST = "manifest.json"

#: "compiled", or "pure" followed by the reason in parentheses.
STATE = "pure (not installed)"


def source_paths(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every source file the digest covers, in a fixed order."""
    paths = [package_dir / name for name in SOURCE_FILES]
    for sub in SOURCE_DIRS:
        paths.extend(sorted((package_dir / sub).rglob("*.py")))
    return paths


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the relative path and bytes of each source file, plus the Python
    version and ``COMPILED`` (a compiled module only loads into the interpreter it was
    built for)."""
    h = hashlib.sha256()
    h.update(sys.version.encode())
    h.update(repr(COMPILED).encode())
    for path in source_paths(package_dir):
        h.update(str(path.relative_to(package_dir)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


class _CoreFinder(importlib.abc.MetaPathFinder):
    """Loads the listed modules from their compiled files in the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def read_manifest(build_dir: Path = BUILD_DIR) -> dict[str, object] | None:
    """The build's manifest, or None when there is no (complete) build."""
    try:
        data = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check(build_dir: Path = BUILD_DIR) -> tuple[dict[str, Path] | None, str]:
    """(module -> compiled file, "compiled") when the build matches the sources, else
    (None, "pure (reason)")."""
    manifest = read_manifest(build_dir)
    if manifest is None:
        return None, "pure (no compiled build)"
    if manifest.get("digest") != source_digest():
        return None, "pure (stale build: sources changed since it was compiled)"
    modules = manifest.get("modules")
    if not isinstance(modules, dict):
        return None, "pure (unreadable manifest)"
    files = {str(name): build_dir / str(rel) for name, rel in modules.items()}
    if not all(f.is_file() for f in files.values()):
        return None, "pure (incomplete build)"
    return files, "compiled"


def install() -> str:
    """Put the compiled modules in front of the ``.py`` files if the build is current.

    Must run before any compiled module is imported (``kpsim/__init__.py`` calls it
    first). Idempotent. Returns and records ``STATE``.
    """
    global STATE
    if any(isinstance(f, _CoreFinder) for f in sys.meta_path):
        return STATE
    if os.environ.get("KPSIM_PURE", "") not in ("", "0"):
        STATE = "pure (KPSIM_PURE set)"
        return STATE
    already = [name for name in COMPILED if name in sys.modules]
    if already:
        STATE = "pure (imported before the compiled core was installed)"
        return STATE
    files, STATE = check()
    if files is None:
        if STATE.startswith("pure (stale"):
            print(
                "kpsim: compiled core is stale (sources changed since `make build`); "
                "running pure Python",
                file=sys.stderr,
            )
        return STATE
    sys.meta_path.insert(0, _CoreFinder(files))
    return STATE


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from the compiled core."""
    spec = getattr(module, "__spec__", None)
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
