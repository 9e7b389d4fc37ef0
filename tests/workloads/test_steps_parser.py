"""The steps-file parser: good files, and every kind of bad input with its line."""

from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.errors import InputError
from kpsim.workloads.steps import (
    Fork,
    Madvise,
    Mmap,
    Mprotect,
    Mremap,
    Munmap,
    Span,
    Touch,
    load_steps,
    parse_steps,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "steps"

GOOD = """\
# a comment
[[step]]
op = "mmap"
name = "R1"
addr = "16T"
length = "1G"
prot = "wr"
flags = ["fixed_noreplace", "noreserve"]

[[step]]  # trailing comment
op = "touch"
region = "R1"
offset = 0x1000
stride = "2M"
access = "read"

[[step]]
op = "munmap"
region = "R1"
length = "2M"

[[step]]
op = "mprotect"
addr = 0x100000000000
length = 4096
prot = "none"

[[step]]
op = "madvise"
region = "R1"
advice = "dontneed"

[[step]]
op = "mremap"
region = "R1"
offset = "4K"
length = "8K"
new_length = "2MiB"
new_addr = "32T"

[[step]]
op = "fork"
"""


def parse_error(text: str) -> InputError:
    with pytest.raises(InputError) as exc:
        parse_steps(text, file="s.toml")
    return exc.value


def step(*lines: str) -> str:
    return "[[step]]\n" + "\n".join(lines) + "\n"


MMAP_OK = step('op = "mmap"', 'name = "A"', 'length = "2M"')


def test_good_file_gives_one_typed_step_per_table():
    """Every op parses into its frozen dataclass with sizes, prot and flags normalised."""
    f = parse_steps(GOOD, file="good.toml")
    assert f.path == "good.toml"
    assert [type(s) for s in f.steps] == [Mmap, Touch, Munmap, Mprotect, Madvise, Mremap, Fork]
    mmap, touch, munmap, mprotect, madvise, mremap, fork = f.steps
    assert mmap == Mmap(
        1, 2, "R1", 16 << 40, 1 << 30, "rw", frozenset({"fixed_noreplace", "noreserve"})
    )
    assert touch == Touch(2, 10, Span("R1", None, 0x1000, None), 2 << 20, False)
    assert munmap.span == Span("R1", None, 0, 2 << 20)
    assert mprotect.span == Span(None, 16 << 40, 0, 4096) and mprotect.prot == "none"
    assert madvise.advice == "dontneed"
    assert (mremap.span.offset, mremap.span.length, mremap.new_length, mremap.new_addr) == (
        4096,
        8192,
        2 << 20,
        32 << 40,
    )
    assert fork == Fork(7, 41)
    with pytest.raises(AttributeError):
        mmap.length = 0  # type: ignore[misc]


def test_defaults_are_rw_private_write_every_page():
    """mmap defaults to prot rw and no flags; touch to writing every 4 KiB page."""
    f = parse_steps(MMAP_OK + step('op = "touch"', 'region = "A"'))
    assert f.steps[0].prot == "rw" and f.steps[0].flags == frozenset()
    assert f.steps[1].stride == 4096 and f.steps[1].write is True


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_examples_parse(path):
    """Every shipped example steps file parses."""
    assert load_steps(path).steps


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            MMAP_OK + step('op = "touch"', 'region = "A"', 'stride = "abc"'),
            8,
            ["step 2 (touch)", "stride"],
        ),
        (MMAP_OK + step('op = "frobnicate"'), 6, ["step 2", "unknown op 'frobnicate'"]),
        (
            MMAP_OK + step('op = "touch"', 'region = "A"', "colour = 1"),
            8,
            ["step 2 (touch)", "colour", "unknown field"],
        ),
        (step('name = "A"'), 1, ["step 1", "missing field 'op'"]),
        (step('op = "mmap"', 'name = "A"'), 1, ["step 1 (mmap)", "missing field 'length'"]),
        (step('op = "mmap"', 'name = "A"', 'length = "3K"'), 4, ["length", "not a multiple"]),
        (step('op = "mmap"', 'name = "A"', 'length = "0"'), 4, ["length", "greater than zero"]),
        (step('op = "mmap"', 'name = "A"', 'length = "2M"', 'prot = "rwz"'), 5, ["prot"]),
        (
            step('op = "mmap"', 'name = "A"', 'length = "2M"', 'flags = ["huge"]'),
            5,
            ["unknown flag 'huge'"],
        ),
        (
            step('op = "mmap"', 'name = "A"', 'length = "2M"', 'flags = ["fixed"]'),
            5,
            ["need an 'addr'"],
        ),
        (
            step('op = "mmap"', 'name = "A"', 'length = "2M"', "addr = [1]"),
            5,
            ["addr", "got a list"],
        ),
        (MMAP_OK + step('op = "munmap"', 'region = "B"'), 7, ["region", "'B' is not the name"]),
        (MMAP_OK + MMAP_OK, 7, ["step 2 (mmap)", "already used by step 1"]),
        (MMAP_OK + step('op = "munmap"', 'region = "A"', "addr = 0"), 8, ["exactly one of"]),
        (MMAP_OK + step('op = "munmap"'), 5, ["exactly one of"]),
        (MMAP_OK + step('op = "munmap"', "addr = 0"), 5, ["missing field 'length'"]),
        (MMAP_OK + step('op = "madvise"', 'region = "A"', 'advice = "free"'), 8, ["advice"]),
        (MMAP_OK + step('op = "mprotect"', 'region = "A"'), 5, ["missing field 'prot'"]),
        (MMAP_OK + step('op = "touch"', 'region = "A"', 'access = "exec"'), 8, ["access"]),
        (MMAP_OK + step('op = "mremap"', 'region = "A"'), 5, ["missing field 'new_length'"]),
        (MMAP_OK + step('op = "fork"', "", "", 'region = "A"'), 9, ["step 2 (fork)", "region"]),
        ('title = "x"\n' + MMAP_OK, 1, ["unknown top-level key 'title'"]),
        (MMAP_OK + "[other]\nx = 1\n", 5, ["unknown top-level key 'other'"]),
        (
            MMAP_OK
            + step(
                'op = "mmap"', 'name = "B"', "flags = [", '  "noreserve",', "]", 'length = "1K"'
            ),
            11,
            ["length"],
        ),
    ],
)
def test_bad_input_names_step_field_and_line(text, line, words):
    """Each kind of bad input is an InputError at the offending line, naming step and field."""
    err = parse_error(text)
    assert (err.file, err.line) == ("s.toml", line)
    for w in words:
        assert w in err.problem


def test_toml_syntax_error_carries_line_and_column():
    """A TOML syntax error is converted with tomllib's line and column."""
    err = parse_error(MMAP_OK + '[[step]]\nop = "fork\n')
    assert err.line == 6 and "TOML syntax error" in err.problem and "column" in err.problem


def test_no_steps_is_an_error():
    """A file without [[step]] tables is refused."""
    assert "no steps" in parse_error("# nothing\n").problem


def test_unreadable_and_non_utf8_files(tmp_path):
    """A missing file and a non-UTF-8 file are InputErrors naming the file."""
    with pytest.raises(InputError, match="cannot read steps file"):
        load_steps(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"# ok\n# \xff\n")
    with pytest.raises(InputError) as exc:
        load_steps(bad)
    assert exc.value.line == 2 and "UTF-8" in exc.value.problem


def test_cli_reports_bad_steps_file_in_one_line_exit_2(tmp_path, capsys):
    """kpsim conform on a malformed file prints file:line: step N (op): problem and exits 2."""
    f = tmp_path / "bad.toml"
    f.write_text(MMAP_OK + step('op = "touch"', 'region = "A"', 'stride = "2Q"'))
    assert main(["conform", "--steps", str(f), "--host-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"kpsim conform: {f}:8: step 2 (touch): stride: not a size")


def test_cli_usage_error_exits_2(capsys):
    """--sim-only and --host-only exclude each other (usage error, exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(["conform", "--steps", "x.toml", "--sim-only", "--host-only"])
    assert exc.value.code == 2
