"""One format under atheris (``python -m tests.fuzz.atheris_main FORMAT -runs=N``).

Each input is written to a file (or, for ``cli``, split on NUL bytes into argv after
a verb chosen by its first byte) and judged by :mod:`tests.fuzz.harness`; a rule
broken raises, which atheris reports as a crash with the input saved.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():  # the parsers, so that coverage guides the mutation
    from tests.fuzz.harness import FILE_FORMATS, VERBS, boot_stubbed, run_argv, run_snapshot

    import kpsim.cli.main
    import kpsim.engine.explore
    import kpsim.machine.scenario
    import kpsim.workloads.snapshot
    import kpsim.workloads.steps
    import kpsim.workloads.trace  # noqa: F401


def main() -> None:
    fmt = sys.argv.pop(1)
    tmp = tempfile.mkdtemp(prefix="kpsim-fuzz-")
    if fmt == "cli":

        def one(data: bytes) -> None:
            if not data:
                return
            words = data[1:].decode("utf-8", "replace").split("\x00")
            run_argv([VERBS[data[0] % len(VERBS)], *words])

    else:
        f = FILE_FORMATS[fmt]
        path = os.path.join(tmp, "input" + f.suffix)
        corpus = os.path.join(tmp, "corpus")
        os.makedirs(corpus)
        for i, seed in enumerate(f.seeds()):
            with open(os.path.join(corpus, str(i)), "wb") as out:
                out.write(seed)
        sys.argv.append(corpus)

        def one(data: bytes) -> None:
            with open(path, "wb") as out:
                out.write(data)
            if fmt == "snapshot":
                run_snapshot(path)
            else:
                run_argv(f.argv(path), path)

    with boot_stubbed():
        atheris.Setup(sys.argv, one)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
