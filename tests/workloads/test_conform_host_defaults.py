"""kpsim conform: the model follows the host's PT_RECLAIM and THP settings, and starts
from a copy of the host child's address space so that kernel-placed steps agree."""

import json
from pathlib import Path

from kpsim.cli.main import main

from .host_support import EXAMPLES, needs_host

DONTNEED = str(EXAMPLES / "madvise-dontneed.toml")


def _deltas(capsys, *argv):
    code = main(["conform", *argv, "--json"])
    doc = json.loads(capsys.readouterr().out)
    return code, [(s["op"], s["sim_delta"]) for s in doc["steps"]], doc


def test_pt_reclaim_switch_reaches_the_model(capsys):
    """--pt-reclaim on: whole-slot DONTNEEDs free tables; off (negative control): no
    madvise step frees any (there is no THP in this file)."""
    _, on, _ = _deltas(capsys, "--sim-only", "--pt-reclaim", "on", "--steps", DONTNEED)
    _, off, _ = _deltas(capsys, "--sim-only", "--pt-reclaim", "off", "--steps", DONTNEED)
    assert any(op == "madvise" and d < 0 for op, d in on)
    assert all(d >= 0 for op, d in off if op == "madvise")


def test_thp_never_reaches_the_model(capsys, tmp_path: Path):
    """--thp madvise: the fault maps a THP, whose deposited table goes with a whole-slot
    DONTNEED even without PT_RECLAIM; --thp never (negative control): 4 KiB pages,
    and without PT_RECLAIM their table stays."""
    steps = tmp_path / "t.toml"
    steps.write_text(
        '[[step]]\nop = "mmap"\nname = "A"\naddr = "16T"\nlength = "2M"\n'
        'flags = ["fixed_noreplace", "noreserve"]\n'
        '[[step]]\nop = "madvise"\nregion = "A"\nadvice = "hugepage"\n'
        '[[step]]\nop = "touch"\nregion = "A"\nlength = "4K"\n'
        '[[step]]\nop = "madvise"\nregion = "A"\nadvice = "dontneed"\n'
    )
    args = ["--sim-only", "--pt-reclaim", "off", "--steps", str(steps)]
    _, thp, _ = _deltas(capsys, "--thp", "madvise", *args)
    _, never, _ = _deltas(capsys, "--thp", "never", *args)
    assert thp[-1] == ("madvise", -1)  # the THP's deposit goes with it, PT_RECLAIM or not
    assert never[-1] == ("madvise", 0)  # 4 KiB pages: without PT_RECLAIM the table stays


@needs_host
def test_kernel_placed_steps_agree_with_the_host(capsys):
    code, _, doc = _deltas(capsys, "--steps", str(EXAMPLES / "kernel-placed.toml"))
    assert code == 0 and doc["mismatches"] == 0
    # the model started from the host child's address space: similar absolute counts
    first = doc["steps"][0]
    assert abs(first["sim_pt_pages"] - first["host_pt_pages"]) <= 2


def test_model_out_of_memory_is_one_line_exit_2(capsys, tmp_path: Path):
    """Writing more than the model machine holds: one line naming the step, exit 2; the
    same steps with a larger --memory run (control)."""
    steps = tmp_path / "big.toml"
    steps.write_text(
        '[[step]]\nop = "mmap"\nname = "A"\naddr = "16T"\nlength = "384M"\n'
        'flags = ["fixed_noreplace", "noreserve"]\n'
        '[[step]]\nop = "touch"\nregion = "A"\n'
    )
    code = main(["conform", "--sim-only", "--memory", "256M", "--steps", str(steps)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "big.toml:7: step 2 (touch): the target ran out of memory" in err[0]
    assert main(["conform", "--sim-only", "--memory", "1G", "--steps", str(steps)]) == 0
