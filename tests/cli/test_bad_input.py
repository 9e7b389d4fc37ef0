"""Bad input to every ``kpsim`` verb: one stderr line naming the file, the line and the
problem, exit status 2, nothing on stdout (no partial result), never a traceback.

Each case runs in-process through :func:`kpsim.cli.main.main` and fails before a
machine boots (or on a 256M machine), so the whole file takes a few seconds.
``{d}`` in a case stands for a directory of bad files made by :func:`bad_dir`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.errors import OutOfMemory

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCENARIO = str(EXAMPLES / "scenarios" / "default.toml")
STEPS = str(EXAMPLES / "steps" / "fork.toml")
TRUE_TRACE = TRACES / "true.trace"
M = ("--memory", "256M")

#: Lines of the bad files; the trace ones are cut from a recorded trace.
_TRUE_LINES = TRUE_TRACE.read_text(encoding="utf-8").splitlines(keepends=True)
BAD_MID_LINE = 21  # badmid.trace: a non-perf line between two good halves
TRUNC_LINE = len(_TRUE_LINES)  # trunc.trace: the last line cut before its newline


@pytest.fixture
def bad_dir(tmp_path: Path) -> Path:
    files: dict[str, bytes | str] = {
        "empty.toml": "",
        "garbage.bin": bytes(range(256)) * 2,
        "nonutf8.toml": b'seed = 0\n[machine]\nmemory = "1G\xff\xfe"\n',
        "trunc.toml": 'seed = 0\n[machine]\nmemory = "1G\n',
        "types.toml": '[machine]\nmemory = 5\ncpus = "two"\n',
        "unkwl.toml": '[machine]\nmemory = "256M"\n[[workload]]\nname = "nope"\n',
        "wlsize.toml": '[[workload]]\nname = "micromm.fork"\nsize = "1T"\n',
        "badcosts.toml": '[costs]\npte_write = "x"\n',
        "negcosts.toml": "[costs]\npte_write = -5\n",
        "bad.vmpte.json": '{"x": 1}\n',
        "badop.toml": '[[step]]\nop = "frobnicate"\n',
        "comments.trace": "# only a comment\n\n",
        "badmid.trace": "".join(_TRUE_LINES[: BAD_MID_LINE - 1])
        + "this is not a perf line\n"
        + "".join(_TRUE_LINES[BAD_MID_LINE - 1 :]),
        "trunc.trace": "".join(_TRUE_LINES)[: -len(_TRUE_LINES[-1]) // 2],
        "a-file": "x\n",
    }
    for name, content in files.items():
        p = tmp_path / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    (tmp_path / "adir").mkdir()
    return tmp_path


# (argv, substrings the one stderr line must contain). "{d}" is the bad-file directory.
CASES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    ((), ("kpsim: error: no VERB given",)),
    (("--bogus",), ("kpsim: error: unrecognized arguments: --bogus",)),
    (("ptdump", "linear", "extra"), ("kpsim ptdump: error: unrecognized arguments: extra",)),
    # options every machine verb shares
    *[
        ((verb, "--bogus"), (f"kpsim {verb}: error: unrecognized arguments: --bogus",))
        for verb in ("boot", "ptdump", "kunit", "audit", "pba", "attack", "run", "reproduce")
    ],
    (("boot", "--memory", "0"), ("memory must be between 256M and 128T, got 0B",)),
    (("boot", "--memory", "1P"), ("memory must be between 256M and 128T, got 1024T",)),
    (("boot", "--memory", "-1G"), ("memory: size must not be negative, got '-1G'",)),
    (("boot", "--memory=-1G"), ("size must not be negative",)),
    (("boot", "--memory", "4097"), ("got 4097B",)),
    (("boot", "--memory", "257M"), ("memory must be a multiple of 2M, got 257M",)),
    (("boot", "--memory", "1.5G"), ("memory: not a size: '1.5G'",)),
    (("boot", "--memory", ""), ("memory: not a size: ''",)),
    (("boot", "--memory", "2T"), ("memory 2T with a PTE-mapped linear map", "--linear-map b")),
    (("boot", "--cpus", "0"), ("cpus must be between 1 and 256, got 0",)),
    (("boot", "--cpus", "100000"), ("cpus must be between 1 and 256, got 100000",)),
    (("boot", "--cpus", "-1"), ("cpus must be between 1 and 256, got -1",)),
    (("boot", "--cpus", "x"), ("argument --cpus: not a number: 'x'",)),
    (("boot", "--seed", "-1"), ("seed must be a non-negative integer, got -1",)),
    (("boot", "--linear-map", "foo"), ("unknown linear map policy 'foo'",)),
    (("boot", "--allocator", "foo"), ("unknown allocator 'foo'",)),
    (("ptdump", "nope"), ("argument REGION: invalid choice: 'nope'",)),
    (("kunit", "--cpus", "0", "--json"), ("cpus must be between 1 and 256",)),
    # attack: the machine options are checked first (--cpus 0 is about --cpus)
    (("attack", "--cpus", "0"), ("cpus must be between 1 and 256, got 0",)),
    (("attack", *M, "--targets", "nope"), ("--targets: unknown target 'nope'",)),
    (("attack", *M, "--timing", "nope"), ("--timing: unknown timing 'nope'",)),
    (("attack", *M, "--attempts", "0"), ("--attempts: must be between 1 and 100000",)),
    (("attack", *M, "--attacker-cpu", "5"), ("--attacker-cpu: must be between 0 and 1",)),
    (("audit", *M, "--scale", "0"), ("--scale: must be between 1 and 64, got 0",)),
    (("audit", *M, "--workload", "x"), ("argument --workload: invalid choice: 'x'",)),
    (("pba", *M, "--pool", "0"), ("--pool: must be at least 1, got 0",)),
    (("pba", *M, "--rounds", "-1"), ("--rounds: must be at least 0, got -1",)),
    # run: scenario and cost files
    (("run", "{d}/nonexist.toml"), ("{d}/nonexist.toml: cannot read scenario",)),
    (("run", "{d}/adir"), ("{d}/adir: cannot read scenario: Is a directory",)),
    (("run", "{d}/empty.toml", "--json"), ("{d}/empty.toml:1: no [[workload]]",)),
    (("run", "{d}/garbage.bin"), ("{d}/garbage.bin:2: scenario is not UTF-8",)),
    (
        ("run", "{d}/nonutf8.toml"),
        ("{d}/nonutf8.toml:3: scenario is not UTF-8 text (invalid start byte at column 13)",),
    ),
    (("run", "{d}/trunc.toml"), ("{d}/trunc.toml:3: TOML syntax",)),
    (("run", "{d}/types.toml"), ("{d}/types.toml:2: [machine] memory",)),
    (("run", "{d}/unkwl.toml"), ("{d}/unkwl.toml:4:", "unknown workload 'nope'")),
    (("run", "{d}/wlsize.toml"), ("{d}/wlsize.toml:3:", "must be at most 64G, got '1T'")),
    (("run", "--seed", "-1"), ("seed must be a non-negative integer",)),
    (("run", "--memory", "0"), ("memory must be between 256M and 128T",)),
    (("run", SCENARIO, "--costs", "{d}/nonexist.toml"), ("cannot read cost file",)),
    (("run", SCENARIO, "--costs", "{d}/adir"), ("{d}/adir: cannot read cost file",)),
    (("run", SCENARIO, "--costs", "{d}/garbage.bin"), ("{d}/garbage.bin:2: cost file is not",)),
    (("run", SCENARIO, "--costs", "{d}/badcosts.toml"), ("{d}/badcosts.toml:2: costs.pte_w",)),
    (("run", SCENARIO, "--costs", "{d}/negcosts.toml"), ("{d}/negcosts.toml:2:", ">= 0")),
    (("run", SCENARIO, "--out", "{d}/a-file"), ("{d}/a-file: --out: not a directory",)),
    (("run", SCENARIO, "--out", "/proc/kpsim/x"), ("/proc/kpsim/x: --out: cannot write",)),
    # replay and record --check: traces
    (("replay", *M), ("the following arguments are required: FILE",)),
    (("replay", *M, str(TRUE_TRACE), "--bogus"), ("kpsim replay: error: unrecognized",)),
    (("replay", *M, "{d}/nonexist.trace"), ("{d}/nonexist.trace: cannot read trace",)),
    (("replay", *M, "{d}/adir"), ("{d}/adir: cannot read trace: Is a directory",)),
    (("replay", *M, "{d}/empty.toml"), ("{d}/empty.toml:1: no perf script records",)),
    (
        ("replay", *M, "{d}/comments.trace"),
        (
            "{d}/comments.trace:",
            ": no perf script records",
        ),
    ),
    (("replay", *M, "{d}/garbage.bin"), ("{d}/garbage.bin:1: not a perf script line",)),
    (("replay", *M, "--json", "{d}/badmid.trace"), (f"{{d}}/badmid.trace:{BAD_MID_LINE}: not",)),
    (("replay", *M, "{d}/trunc.trace"), (f"{{d}}/trunc.trace:{TRUNC_LINE}: the trace ends",)),
    (("replay", *M, str(TRUE_TRACE), "--vmpte", "{d}/bad.vmpte.json"), ("{d}/bad.vmpte.json:",)),
    (("replay", *M, str(TRUE_TRACE), "--vmpte", "{d}/garbage.bin"), ("{d}/garbage.bin: not JSON",)),
    (
        ("replay", *M, str(TRUE_TRACE), "--costs", "{d}/badcosts.toml"),
        ("applies only with --cost",),
    ),
    (("replay", *M, str(TRUE_TRACE), "--cost", "--costs", "{d}/badcosts.toml"), ("toml:2:",)),
    (("replay", "--memory", "0", str(TRUE_TRACE)), ("memory must be between",)),
    (("record", "--check", "{d}/nonexist.trace"), ("{d}/nonexist.trace: cannot read trace",)),
    (("record", "--check", "{d}/empty.toml", "--json"), ("no perf script records",)),
    (("record", "--check", "{d}/badmid.trace"), (f"{{d}}/badmid.trace:{BAD_MID_LINE}: not",)),
    (("record", "--check", "{d}/trunc.trace"), (f"{{d}}/trunc.trace:{TRUNC_LINE}: ",)),
    (("record", "--check", "{d}/empty.toml", "-o", "x"), ("--check FILE takes no -o",)),
    (("record",), ("usage: kpsim record -o FILE [-p PID | -a] [-- CMD",)),
    (("record", "-o", "/proc/kpsim/x", "--", "true"), ("/proc/kpsim/x: cannot write the trace",)),
    (("snapshot", "1", "-o", "/proc/kpsim/x"), ("/proc/kpsim/x: cannot write snapshot",)),
    (("snapshot", "abc"), ("argument PID: not a number",)),
    (("record", "-o", "{d}/adir", "--", "true"), ("{d}/adir: cannot write the trace: Is a dir",)),
    (("record", "-o", "{d}/t", "-m", "0", "--", "true"), ("-m/--buffer: expected a size",)),
    (("record", "-o", "{d}/t", "-m", "foo", "--", "true"), ("got 'foo'",)),
    # an output path under a regular file (ENOTDIR: refused even when run as root)
    (("record", "-o", "{d}/a-file/t", "--", "true"), ("{d}/a-file/t: cannot write the trace",)),
    (("run", "--out", "{d}/a-file/o"), ("{d}/a-file/o: --out: cannot write: Not a directory",)),
    (("reproduce", "--write-costs", "{d}/a-file/c"), ("{d}/a-file/c: cannot write costs",)),
    # reproduce
    (("reproduce", "--table", "v9"), ("argument --table: invalid choice: 'v9'",)),
    (("reproduce", "--fit", "nope"), ("'nope' names no row",)),
    (("reproduce", "--params", "nope"), ("unknown cost event 'nope'",)),
    (("reproduce", "--size", "0"), ("--size: must be a multiple of 2M between 2M and 16G",)),
    (("reproduce", "--size", "-2M"), ("--size: size must not be negative",)),
    (("reproduce", "--loops", "0"), ("--loops: must be at least 1, got 0",)),
    (("reproduce", "--processes", "x"), ("argument --processes: not a number: 'x'",)),
    (("reproduce", "--costs", "{d}/badcosts.toml"), ("{d}/badcosts.toml:2:",)),
    (("reproduce", "--write-costs", "{d}/adir"), ("{d}/adir: cannot write costs",)),
    # decode
    (("decode", "pte"), ("the following arguments are required: VALUE",)),
    (("decode", "foo", "0x1"), ("unknown register 'foo': use pte",)),
    (("decode", "pte", "zz"), ("pte value: not a number: 'zz'",)),
    (("decode", "pte", "-1"), ("outside the 64-bit range",)),
    (("decode", "pte", "0x1ffffffffffffffff"), ("outside the 64-bit range",)),
    # conform and snapshot
    (("conform",), ("the following arguments are required: --steps",)),
    (("conform", "--steps", "{d}/nonexist.toml", "--sim-only"), ("cannot read steps file",)),
    (("conform", "--steps", "{d}/badop.toml", "--sim-only"), ("{d}/badop.toml:2:", "'frobn")),
    (("conform", "--steps", STEPS, "--sim-only", "--memory", "0"), ("memory must be",)),
    (("conform", "--steps", STEPS, "--sim-only", "--host-only"), ("not allowed with",)),
]


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        rc = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line(rc: int, out: str, err: str, wanted: tuple[str, ...]) -> None:
    assert rc == 2, (rc, err)
    assert out == "", "a partial result on stdout"
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("kpsim") and "Traceback" not in err
    for text in wanted:
        assert text in err, (text, err)


@pytest.mark.parametrize(
    ("argv", "wanted"), CASES, ids=[" ".join(a) or "(no verb)" for a, _ in CASES]
)
def test_bad_input_is_one_line_and_exit_2(
    argv: tuple[str, ...],
    wanted: tuple[str, ...],
    bad_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = str(bad_dir)
    rc, out, err = _run(capsys, [a.replace("{d}", d) for a in argv])
    _assert_one_line(rc, out, err, tuple(w.replace("{d}", d) for w in wanted))


def test_an_output_check_leaves_no_file_behind(
    bad_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``record`` checks -o is writable before perf runs; a refused run creates nothing."""
    rc, _, err = _run(capsys, ["record", "-o", f"{bad_dir}/t", "-m", "0", "--", "true"])
    assert rc == 2 and not (bad_dir / "t").exists(), err


def test_out_of_memory_in_a_verb_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A workload too large for the machine is bad input (exit 2), not a traceback;
    ``pba`` names the options to change."""

    def churn(*args: object, **kwargs: object) -> None:
        raise OutOfMemory("page table (level 2) for mm:9")

    monkeypatch.setattr("kpsim.cli.pba.churn", churn)
    rc, out, err = _run(capsys, ["pba", *M, "--pool", "100000"])
    _assert_one_line(rc, out, err, ("ran out of simulated memory", "--pool", "--memory"))


def test_out_of_memory_anywhere_is_caught_by_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boot(*args: object, **kwargs: object) -> None:
        raise OutOfMemory("no pages")

    monkeypatch.setattr("kpsim.cli.boot.boot_from_args", boot)
    rc, out, err = _run(capsys, ["boot", *M])
    _assert_one_line(rc, out, err, ("kpsim boot: the simulated machine ran out of memory",))


def test_a_valid_run_still_succeeds_negative_control(capsys: pytest.CaptureFixture[str]) -> None:
    """The cases above fail for their bad value, not for the verb: the same verbs with
    good values exit 0 and print a result."""
    for argv in (["boot", *M, "--seed", "0"], ["record", "--check", str(TRUE_TRACE)]):
        rc, out, err = _run(capsys, argv)
        assert rc == 0 and out and err == "", (argv, err)


def test_a_closed_pipe_is_exit_0_and_silent() -> None:
    """``kpsim ... | head -1``: rich's console would exit 1 ("found something")."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpsim.cli.main", "run", "--list-workloads"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and err == b""


def test_ctrl_c_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boot(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("kpsim.cli.boot.boot_from_args", boot)
    rc, out, err = _run(capsys, ["boot", *M])
    assert (rc, out, err) == (130, "", "kpsim boot: interrupted\n")


def test_the_host_running_out_of_memory_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boot(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr("kpsim.cli.boot.boot_from_args", boot)
    rc, out, err = _run(capsys, ["boot", *M])
    _assert_one_line(rc, out, err, ("kpsim boot: this host ran out of memory",))


def test_a_scenario_attack_takes_the_targets_the_option_takes() -> None:
    """``[attack] targets`` accepts what ``kpsim attack --targets`` accepts (kimage_alias,
    outside "all"); an unknown name is still refused with its line."""
    from kpsim.attack.config import validate_attack
    from kpsim.errors import InputError
    from kpsim.machine.scenario import parse_scenario

    text = '[attack]\ntargets = ["{}"]\n[[workload]]\nname = "kernbench"\n'
    spec = parse_scenario(text.format("kimage_alias"), "s.toml").attack
    assert spec is not None and validate_attack(spec).targets == ("kimage_alias",)
    bad = parse_scenario(text.format("nope"), "s.toml").attack
    assert bad is not None
    with pytest.raises(InputError, match=r"s\.toml:2: .*unknown target 'nope'"):
        validate_attack(bad)
