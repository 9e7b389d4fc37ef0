"""The brk step and the 'file' mmap flag: parsing, errors, and the model side."""

import pytest

from kpsim.errors import InputError
from kpsim.workloads.simtarget import make_sim_target
from kpsim.workloads.steps import Brk, Mmap, parse_steps, run_steps


def test_brk_parses_grow_and_shrink():
    f = parse_steps(
        '[[step]]\nop = "brk"\nname = "H"\ngrow = "4M"\n[[step]]\nop = "brk"\nshrink = "1M"\n'
    )
    assert f.steps == (Brk(1, 1, "H", 4 << 20), Brk(2, 5, None, -(1 << 20)))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('grow = "4M"\nshrink = "1M"', "exactly one of 'grow' and 'shrink'"),
        ("", "exactly one of 'grow' and 'shrink'"),
        ('grow = "5000"', "not a multiple of the 4 KiB page size"),
        ('name = "H"\nshrink = "1M"', "only a growing brk names a region"),
        ('grow = "1M"\nlength = "1M"', "unknown field"),
    ],
)
def test_brk_errors_name_the_step(body, problem):
    with pytest.raises(InputError) as e:
        parse_steps(f'[[step]]\nop = "brk"\n{body}\n', file="x.toml")
    assert problem in str(e.value)
    assert "step 1 (brk)" in str(e.value)


def test_brk_region_can_be_touched_and_shrinking_past_the_start_is_refused():
    text = """
[[step]]
op = "brk"
name = "H"
grow = "4M"
[[step]]
op = "touch"
region = "H"
stride = "1M"
[[step]]
op = "brk"
shrink = "4M"
[[step]]
op = "brk"
shrink = "4K"
"""
    target = make_sim_target({"memory": "256M", "cpus": 1})
    with pytest.raises(InputError) as e:
        run_steps(parse_steps(text), target)
    target.close()
    assert "step 4 (brk): shrink: below the break" in str(e.value)


def test_brk_growth_and_shrink_tables_in_the_model():
    """Growth maps nothing; a touch builds tables; shrinking it all away frees them
    (control: the same touch without the shrink keeps them)."""
    grow = '[[step]]\nop = "brk"\nname = "H"\ngrow = "4M"\n'
    touch = '[[step]]\nop = "touch"\nregion = "H"\nstride = "2M"\n'
    shrink = '[[step]]\nop = "brk"\nshrink = "4M"\n'
    target = make_sim_target({"memory": "256M", "cpus": 1})
    deltas = [r.delta for r in run_steps(parse_steps(grow + touch + shrink), target)]
    target.close()
    assert deltas[0] == 0 and deltas[1] > 0 and deltas[2] == -deltas[1]


def test_file_flag_maps_a_file_not_anonymous_memory():
    f = parse_steps(
        '[[step]]\nop = "mmap"\nname = "F"\naddr = "16T"\nlength = "2M"\n'
        'flags = ["fixed_noreplace", "file"]\n'
    )
    step = f.steps[0]
    assert isinstance(step, Mmap) and "file" in step.flags
    target = make_sim_target({"memory": "256M", "cpus": 1})
    run_steps(f, target)
    vma = target.proc.mm.find_vma(16 << 40)
    assert vma is not None and vma.file is not None
    target.close()


@pytest.mark.parametrize(
    ("flags", "refused"), [('["shared"]', True), ('["file"]', True), ("[]", False)]
)
def test_touch_past_the_end_of_a_grown_file_mapping_is_refused(flags, refused):
    """mremap grows a shared or file mapping but not its file: a touch there would be
    SIGBUS on the host, so it is refused as bad input; a grown private anonymous
    mapping may be touched (control)."""
    text = f"""
[[step]]
op = "mmap"
name = "S"
addr = "16T"
length = "1M"
flags = ["fixed_noreplace", {flags[1:-1] + ", " if flags != "[]" else ""}"noreserve"]
[[step]]
op = "mremap"
region = "S"
new_length = "2M"
[[step]]
op = "touch"
region = "S"
offset = "1M"
length = "4K"
"""
    target = make_sim_target({"memory": "256M", "cpus": 1})
    try:
        if refused:
            with pytest.raises(InputError) as e:
                run_steps(parse_steps(text), target)
            assert "past the end of its file" in str(e.value)
        else:
            assert [r.delta for r in run_steps(parse_steps(text), target)][-1] == 3
    finally:
        target.close()
