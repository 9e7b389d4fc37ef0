"""run_steps against a fake target: regions, deltas, fork baselines, refusals, comparison."""

import errno

import pytest

from kpsim.errors import InputError
from kpsim.workloads.steps import compare_results, conform_document, parse_steps, run_steps


class FakeTarget:
    """Counts one table per distinct 2 MiB slot ever touched; records every call."""

    def __init__(self, *, refuse=None, place=0x7F00_0000_0000):
        self.calls = []
        self.slots = set()
        self.forks = 0
        self.refuse = refuse
        self.place = place
        self.closed = False

    def _call(self, *call):
        self.calls.append(call)
        if call[0] == self.refuse:
            raise OSError(errno.EEXIST, "File exists")

    def mmap(self, addr, length, prot, flags):
        self._call("mmap", addr, length, prot, flags)
        return self.place if addr is None else addr

    def touch(self, addr, length, stride, write):
        self._call("touch", addr, length, stride, write)
        self.slots.update(a >> 21 for a in range(addr, addr + length, stride))

    def munmap(self, addr, length):
        self._call("munmap", addr, length)

    def mprotect(self, addr, length, prot):
        self._call("mprotect", addr, length, prot)

    def madvise(self, addr, length, advice):
        self._call("madvise", addr, length, advice)

    def mremap(self, old_addr, old_len, new_len, new_addr):
        self._call("mremap", old_addr, old_len, new_len, new_addr)
        return 0x6000_0000_0000 if new_addr is None else new_addr

    def fork(self):
        self.forks += 1
        return 100 + len(self.slots)

    def pt_pages(self):
        return 10 + len(self.slots)

    def close(self):
        self.closed = True


STEPS = """\
[[step]]
op = "mmap"
name = "A"
addr = "16T"
length = "8M"
flags = ["fixed_noreplace"]

[[step]]
op = "touch"
region = "A"
offset = "2M"
stride = "2M"

[[step]]
op = "mmap"
name = "K"
length = "4M"

[[step]]
op = "fork"

[[step]]
op = "mremap"
region = "A"
new_length = "16M"

[[step]]
op = "munmap"
region = "A"
offset = "4M"
length = "2M"

[[step]]
op = "touch"
region = "K"
length = "4K"
access = "read"
"""

T16 = 16 << 40


def run(text, target):
    return run_steps(parse_steps(text, file="f.toml"), target)


def test_deltas_addresses_and_calls():
    """Regions resolve to mmap's result, deltas are per step, calls carry the resolved ranges."""
    t = FakeTarget()
    res = run(STEPS, t)
    assert [(r.index, r.op, r.delta) for r in res] == [
        (1, "mmap", 0),
        (2, "touch", 3),
        (3, "mmap", 0),
        (4, "fork", 0),
        (5, "mremap", 0),
        (6, "munmap", 0),
        (7, "touch", 1),
    ]
    assert res[1].pt_pages == 13 and res[1].line == 8
    assert res[0].address == T16 and res[2].address == 0x7F00_0000_0000
    assert ("touch", T16 + (2 << 20), 6 << 20, 2 << 20, True) in t.calls
    assert ("mremap", T16, 8 << 20, 16 << 20, None) in t.calls
    # the whole region moved, so A now names the new place
    assert ("munmap", 0x6000_0000_0000 + (4 << 20), 2 << 20) in t.calls
    assert ("touch", 0x7F00_0000_0000, 4096, 4096, False) in t.calls


def test_fork_child_counted_against_a_baseline_child():
    """A steps file with a fork forks a baseline child first; child_delta is over it."""
    t = FakeTarget()
    res = run(STEPS, t)
    assert t.forks == 2
    fork = res[3]
    assert (fork.child_pt_pages, fork.child_delta) == (103, 3)
    assert all(r.child_pt_pages is None for r in res if r.op != "fork")


def test_no_baseline_fork_without_fork_steps():
    """Without a fork step the target is never forked."""
    t = FakeTarget()
    run(STEPS.replace('op = "fork"', 'op = "madvise"\nregion = "K"\nadvice = "hugepage"'), t)
    assert t.forks == 0


def test_refused_call_is_input_error_with_step_line():
    """A call the kernel refuses (OSError) becomes an InputError naming step and line."""
    with pytest.raises(InputError) as exc:
        run(STEPS, FakeTarget(refuse="mremap"))
    err = exc.value
    assert (err.file, err.line) == ("f.toml", 22)
    assert err.problem == "step 5 (mremap): the kernel refused it: File exists"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ('op = "touch"\naddr = "32T"\nlength = "4K"', "0x200000000000 is not mapped"),
        ('op = "touch"\nregion = "A"\noffset = "8M"\nlength = "4K"', "is not mapped"),
        (
            'op = "mprotect"\nregion = "A"\nprot = "r"\n[[step]]\nop = "touch"\nregion = "A"',
            "a write faults",
        ),
        (
            'op = "mprotect"\nregion = "A"\nprot = "none"\n'
            '[[step]]\nop = "touch"\nregion = "A"\naccess = "read"',
            "a read faults",
        ),
        (
            'op = "munmap"\nregion = "A"\n[[step]]\nop = "touch"\nregion = "A"\nstride = "1M"',
            "is not mapped",
        ),
    ],
)
def test_touch_that_would_fault_is_refused_before_the_target_sees_it(extra, why):
    """Touching unmapped or protected memory is an InputError, and the target is not touched."""
    text = STEPS.split('[[step]]\nop = "touch"')[0] + "[[step]]\n" + extra + "\n"
    t = FakeTarget()
    with pytest.raises(InputError, match="touch would fault") as exc:
        run(text, t)
    assert why in exc.value.problem
    assert not [c for c in t.calls if c[0] == "touch"]


def test_sparse_touch_may_skip_holes():
    """A stride that jumps over an unmapped hole is fine: only touched bytes must be mapped."""
    text = STEPS.split('[[step]]\nop = "touch"')[0] + (
        '[[step]]\nop = "munmap"\nregion = "A"\noffset = "4K"\nlength = "2M"\n'
        '[[step]]\nop = "touch"\nregion = "A"\nstride = "4M"\n'
    )
    res = run(text, FakeTarget())
    assert res[-1].delta == 2


def test_offset_past_region_end_is_refused():
    """A span whose offset is past its region's end (with no length) is an InputError."""
    text = (
        STEPS.split('[[step]]\nop = "touch"')[0]
        + '[[step]]\nop = "munmap"\nregion = "A"\noffset = "8M"\n'
    )
    with pytest.raises(InputError, match="past the end of 'A'"):
        run(text, FakeTarget())


def test_on_step_sees_every_result():
    """The on_step callback receives each StepResult in order."""
    seen = []
    run_steps(parse_steps(STEPS), FakeTarget(), on_step=seen.append)
    assert [r.index for r in seen] == list(range(1, 8))


def test_compare_and_document_shape():
    """match compares deltas (and child deltas); the document has exactly the issue's keys."""
    steps = parse_steps(STEPS)
    a = run_steps(steps, FakeTarget())
    b = run_steps(steps, FakeTarget())
    rows = compare_results(steps, a, b)
    doc = conform_document(rows)
    assert doc["mismatches"] == 0 and set(doc) == {"steps", "mismatches"}
    keys = ["index", "op", "sim_pt_pages", "sim_delta", "host_pt_pages", "host_delta", "match"]
    assert list(doc["steps"][0]) == keys
    assert list(doc["steps"][3]) == [*keys, "child_sim_pt_pages", "child_host_pt_pages"]
    assert doc["steps"][3]["child_host_pt_pages"] == 103

    shifted = [
        r.__class__(**{**{f: getattr(r, f) for f in r.__slots__}, "pt_pages": r.pt_pages + 7})
        for r in b
    ]
    assert conform_document(compare_results(steps, a, shifted))["mismatches"] == 0

    other = FakeTarget()
    c = run_steps(
        parse_steps(STEPS.replace('offset = "2M"\nstride = "2M"', 'stride = "2M"')), other
    )
    doc = conform_document(compare_results(steps, a, c))
    # the touch differs, and so does the child forked after it
    assert doc["mismatches"] == 2
    assert [d["match"] for d in doc["steps"]] == [True, False, True, False, True, True, True]


def test_one_sided_rows_have_null_match():
    """With only one side, the other side's fields and match are null, and nothing mismatches."""
    steps = parse_steps(STEPS)
    doc = conform_document(compare_results(steps, None, run_steps(steps, FakeTarget())))
    assert doc["mismatches"] == 0
    first = doc["steps"][0]
    assert first["sim_pt_pages"] is None and first["sim_delta"] is None and first["match"] is None
    assert doc["steps"][3]["child_sim_pt_pages"] is None
