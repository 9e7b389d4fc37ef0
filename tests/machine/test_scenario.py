"""Scenario files: valid ones parse to plain values; malformed ones name file, line and field."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpsim.errors import ConfigError, InputError
from kpsim.machine.scenario import load_scenario, parse_scenario, parse_toml

GOOD = """\
# a small arm64 machine with POE
seed = 7

[machine]
memory = "4G"
cpus = 4
poe = true

[kernel]
linear_map = "pte"
hardened_pgtables = true
allocator = "minimal"
batching = false
pt_reclaim = true

[[workload]]
name = "micromm.fork"
size = "1G"
h = 1

[[workload]]
name = "vmalloc.fix_size_alloc"
pages = [1, 4,
         16]
huge = false

[attack]
primitive = "write64"
cpu = 1
"""


def test_good_scenario_parses_to_plain_values():
    """A complete scenario gives memory in bytes, plain kernel values, workloads and seed."""
    s = parse_scenario(GOOD, "good.toml")
    assert s.machine == {"memory": 4 << 30, "cpus": 4, "poe": True}
    assert s.kernel == {"linear_map": "pte", "hardened_pgtables": True, "allocator": "minimal",
                        "batching": False, "pt_reclaim": True}  # fmt: skip
    assert s.seed == 7 and s.path == "good.toml"
    assert [w.name for w in s.workloads] == ["micromm.fork", "vmalloc.fix_size_alloc"]
    assert s.workloads[1].params == {"pages": [1, 4, 16], "huge": False}


def test_workload_and_attack_params_keep_their_lines():
    """Each workload and attack parameter keeps the line it was written on."""
    s = parse_scenario(GOOD, "good.toml")
    fork, vmalloc = s.workloads
    assert fork.line == 16 and fork.param_lines == {"size": 18, "h": 19}
    assert vmalloc.line == 21 and vmalloc.param_lines == {"pages": 23, "huge": 25}
    assert s.attack is not None and s.attack.line == 27
    assert s.attack.param_lines == {"primitive": 28, "cpu": 29}


def test_workload_error_helper_points_at_the_parameter():
    """WorkloadSpec.error gives the registry an InputError at the parameter's line."""
    w = parse_scenario(GOOD, "good.toml").workloads[1]
    err = w.error("huge", "must be 0 or 1")
    assert (err.file, err.line) == ("good.toml", 25)
    assert "huge" in str(err) and "vmalloc.fix_size_alloc" in str(err)
    assert w.error(None, "unknown workload").line == 21


def test_unset_fields_are_left_to_the_machine_config():
    """Only the fields the file sets appear, so MachineConfig's defaults apply to the rest."""
    s = parse_scenario('[machine]\ncpus = 1\n[[workload]]\nname = "kernbench"\n')
    assert s.machine == {"cpus": 1} and s.kernel == {} and s.attack is None and s.seed == 0


def test_memory_accepts_sizes_and_integers():
    """memory takes "512M", "2GiB" and a plain byte count."""
    for text, size in (('"512M"', 512 << 20), ('"2GiB"', 2 << 30), (str(1 << 30), 1 << 30)):
        s = parse_scenario(f'[machine]\nmemory = {text}\n[[workload]]\nname = "x"\n')
        assert s.machine["memory"] == size


def test_load_scenario_reads_a_file(tmp_path):
    """load_scenario reads the file and records its path."""
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    assert load_scenario(path).path == str(path)


WL = '\n[[workload]]\nname = "kernbench"\n'

BAD = [
    # (scenario text, line, field named in the message, problem named in the message)
    ("seed = 1\n\n[machin]\ncpus = 2\n" + WL, 3, "machin", "unknown field"),
    ("[machine]\ncpus = 2\ncpu = 3\n" + WL, 3, "cpu", "unknown field"),
    ("[machine]\n\ncpus = 0\n" + WL, 3, "cpus", "from 1 to 256"),
    ("[machine]\ncpus = 257\n" + WL, 2, "cpus", "from 1 to 256"),
    ("[machine]\ncpus = \"4\"\n" + WL, 2, "cpus", "got string '4'"),
    ("[machine]\ncpus = true\n" + WL, 2, "cpus", "got boolean true"),
    ("[machine]\nmemory = \"lots\"\n" + WL, 2, "memory", "not a size"),
    ("[machine]\nmemory = 4097\n" + WL, 2, "memory", "multiple of 2M"),
    ("[machine]\nmemory = \"16M\"\n" + WL, 2, "memory", "multiple of 2M from 256M"),
    ("[machine]\nmemory = \"1P\"\n" + WL, 2, "memory", "to 128T"),
    ("[machine]\nmemory = 4.5\n" + WL, 2, "memory", "must be a size"),
    ("[machine]\npoe = \"yes\"\n" + WL, 2, "poe", "true or false"),
    ("[machine.numa]\nnodes = 2\n" + WL, 1, "numa", "unknown field"),
    ("machine = 3\n" + WL, 1, "machine", "must be a table"),
    ("machine.cpus = 0\n" + WL, 1, "cpus", "from 1 to 256"),
    ("machine = { poe = true, cpus = 900 }\n" + WL, 1, "cpus", "from 1 to 256"),
    ("[kernel]\nlinear_map = \"huge\"\n" + WL, 2, "linear_map", '"pte" | "block"'),
    ("[kernel]\nallocator = \"buddy\"\n" + WL, 2, "allocator", '"minimal" | "pba"'),
    ("[kernel]\nbatching = 1\n" + WL, 2, "batching", "true or false"),
    ("[kernel]\n\nseries = \"v9\"\n" + WL, 3, "series", '"v6" | "v7" | "v8" | "enter-leave"'),
    ("[kernel]\n\n\npt_reclaim = \"no\"\n" + WL, 4, "pt_reclaim", "true or false"),
    ("[kernel]\nhardened = true\n" + WL, 2, "hardened", "unknown field"),
    ("seed = -1\n" + WL, 1, "seed", "non-negative integer"),
    ("seed = \"x\"\n" + WL, 1, "seed", "non-negative integer"),
    ("seed = 1\n\n[workload]\nname = \"kernbench\"\n", 3, "workload", "[[workload]]"),
    ("workload = []\n", 1, "workload", "one or more"),
    ("workload = [1]\n", 1, "workload", "must be a table"),
    ("[[workload]]\nname = \"kernbench\"\n\n[[workload]]\npages = 4\n", 4, "name", "missing"),
    ("[[workload]]\nname = 3\n", 2, "name", "non-empty string"),
    ("[[workload]]\nname = \"  \"\n", 2, "name", "non-empty string"),
    ("attack = \"all\"\n" + WL, 1, "attack", "must be a table"),
    ("color = \"red\"\n" + WL, 1, "color", "unknown field"),
    ("[machine]\ncpus = 2\n" + WL + "[machine]\npoe = true\n", 6, "", "TOML syntax"),
    ("[machine]\ncpus = = 2\n" + WL, 2, "", "TOML syntax"),
    ('[[workload]]\nname = "x"\ndesc = """\na\nb"""\nbad = \n', 6, "", "TOML syntax"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "field", "problem"), BAD)
def test_malformed_scenario_names_file_line_field_and_problem(text, line, field, problem):
    """Each malformed scenario is an InputError at the right line, naming field and problem."""
    with pytest.raises(InputError) as exc:
        parse_scenario(text, "bad.toml")
    err = exc.value
    assert (err.file, err.line) == ("bad.toml", line), str(err)
    assert str(err).startswith(f"bad.toml:{line}: ")
    assert field in str(err) and problem in str(err), str(err)


def test_impossible_machine_values_are_config_errors():
    """Values of the right type but impossible for a machine are ConfigError (still exit 2)."""
    with pytest.raises(ConfigError):
        parse_scenario("[machine]\ncpus = 0\n" + WL)
    with pytest.raises(ConfigError):
        parse_scenario('[kernel]\nallocator = "buddy"\n' + WL)


def test_missing_workload_names_the_file():
    """A scenario with no [[workload]] says so, naming the file and its last line (where
    one would go: no line is to blame, but every rejection names one)."""
    with pytest.raises(InputError, match=r"^bad.toml:2: no \[\[workload\]\]") as exc:
        parse_scenario("[machine]\ncpus = 2\n\n", "bad.toml")
    assert exc.value.line == 2


def test_unreadable_file_is_input_error(tmp_path):
    """A missing or non-UTF-8 scenario file is an InputError naming the file."""
    with pytest.raises(InputError, match="cannot read scenario") as exc:
        load_scenario(tmp_path / "none.toml")
    assert exc.value.file.endswith("none.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe seed = 1")
    with pytest.raises(InputError, match="not UTF-8"):
        load_scenario(binary)


def test_scanner_lines_survive_multiline_values_and_quoted_keys():
    """Multi-line strings and arrays, quoted and dotted keys do not shift later lines."""
    text = textwrap.dedent('''\
        [[workload]]
        name = "x"
        doc = """
        one "quoted" line
        two"""
        lit = \'\'\'
        raw \\ text\'\'\'
        "quoted key" = 1
        list = [
          { a = 1 },  # comment ]
          "s, with ] chars",
        ]
        tab.inner = 2
        [workload.sub]
        deep = 3
        ''')
    doc = parse_toml(text, "t.toml")
    lines = doc.lines
    assert lines[("workload", 0, "quoted key")] == 8
    assert lines[("workload", 0, "list", 1)] == 11
    assert lines[("workload", 0, "list", 0, "a")] == 10
    assert lines[("workload", 0, "tab")] == 13
    assert lines[("workload", 0, "sub", "deep")] == 15
    assert doc.line(("workload", 0, "list", 1, "nope")) == 11


@given(
    blanks=st.lists(st.sampled_from(["", "# note", "   ", "\t# x = 1"]), min_size=3, max_size=3),
    cpus=st.integers(min_value=257, max_value=10_000),
)
def test_error_line_tracks_inserted_blank_and_comment_lines(blanks, cpus):
    """However many blank or comment lines come first, a bad field is reported at its own line."""
    head = "\n".join(blanks)
    text = f"{head}\n[machine]\ncpus = {cpus}\n" + WL
    with pytest.raises(InputError) as exc:
        parse_scenario(text, "p.toml")
    assert exc.value.line == len(blanks) + 2


def test_machine_config_takes_scenario_values_and_overrides():
    """machine_config builds the MachineConfig; command-line overrides win field by field."""
    from kpsim.machine.scenario import machine_config

    s = parse_scenario(GOOD, "good.toml")
    cfg = machine_config(s)
    assert (cfg.memory, cfg.cpus, cfg.batching, cfg.seed) == (4 << 30, 4, False, 7)
    cfg = machine_config(s, {"cpus": 1, "seed": 9})
    assert (cfg.memory, cfg.cpus, cfg.seed) == (4 << 30, 1, 9)


def test_machine_config_blames_the_scenario_line_of_a_refused_value(monkeypatch):
    """A value MachineConfig refuses is reported at its own line in the scenario."""
    from kpsim.machine import config
    from kpsim.machine.scenario import machine_config

    monkeypatch.setattr(config, "ALLOCATORS", ("minimal",))  # as before "pba" was modelled
    text = '[machine]\ncpus = 2\n\n[kernel]\nlinear_map = "block"\nallocator = "pba"\n' + WL
    s = parse_scenario(text, "s.toml")
    with pytest.raises(ConfigError) as exc:
        machine_config(s)
    assert str(exc.value).startswith("s.toml:6: [kernel] allocator: unknown allocator 'pba'")
    # the same value given on the command line keeps the configuration's own message
    with pytest.raises(ConfigError) as exc:
        machine_config(parse_scenario(WL, "s.toml"), {"allocator": "pba"})
    assert exc.value.file is None


def test_lines_of_machine_and_kernel_fields_are_recorded():
    """Scenario.lines maps "section.field" to its line; Scenario.error uses it."""
    s = parse_scenario(GOOD, "good.toml")
    assert s.lines["machine.cpus"] == 6 and s.lines["kernel.batching"] == 13
    assert s.lines["seed"] == 2 and s.lines["kernel"] == 9
    err = s.error("batching", "no")
    assert (err.file, err.line, str(err)) == (
        "good.toml",
        13,
        "good.toml:13: [kernel] batching: no",
    )


def test_workload_name_errors_point_at_the_name_line():
    """WorkloadSpec.error("name", ...) points at the `name =` line, not the table header."""
    s = parse_scenario('seed = 1\n\n[[workload]]\n# which one\nname = " kernbench "\n')
    w = s.workloads[0]
    assert w.name == "kernbench" and w.line == 3 and w.name_line == 5
    assert w.error("name", "unknown workload").line == 5


def test_allow_unsafe_split_is_a_kernel_field():
    """[kernel] allow_unsafe_split reaches the MachineConfig (the --allow-unsafe-split option)."""
    from kpsim.machine.scenario import machine_config

    s = parse_scenario('[kernel]\nlinear_map = "block"\nallow_unsafe_split = true\n' + WL)
    assert s.kernel["allow_unsafe_split"] is True
    assert machine_config(s).allow_unsafe_split is True
    with pytest.raises(InputError, match=r"^s.toml:2: \[kernel\] allow_unsafe_split: must be true"):
        parse_scenario("[kernel]\nallow_unsafe_split = 1\n" + WL, "s.toml")


def test_kernel_series_is_a_scenario_field():
    """``[kernel] series`` reaches the machine configuration (default: enter-leave)."""
    from kpsim.machine.scenario import machine_config

    s = parse_scenario('[kernel]\nseries = "v6"\n' + WL, "s.toml")
    assert machine_config(s).series == "v6"
    assert machine_config(parse_scenario(WL, "s.toml")).series == "enter-leave"
    assert machine_config(s, {"series": "v8"}).series == "v8"  # the command line wins
