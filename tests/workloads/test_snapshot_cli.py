"""kpsim snapshot on live processes: exact for quiescent ones, files, scan equals read."""

import json
import os
import subprocess
import sys
import time

import pytest

from kpsim.cli.main import main
from kpsim.workloads.host import proc_state
from kpsim.workloads.snapshot import load_snapshot, pagemap_read, pagemap_scan, take_snapshot

from .host_support import needs_host

pytestmark = needs_host


def blocked(cmd, **kw):
    """Start cmd and wait until it sleeps (state S) in its blocking call."""
    proc = subprocess.Popen(cmd, **kw)
    while proc_state(proc.pid) != "S":
        time.sleep(0.01)
    return proc


@pytest.fixture
def sleeper():
    proc = blocked(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def idle_python():
    code = "import mmap, sys\nm = mmap.mmap(-1, 1 << 24)\nm[::4096] = b'x' * 4096\nsys.stdin.read()"
    proc = blocked([sys.executable, "-c", code], stdin=subprocess.PIPE)
    yield proc
    proc.stdin.close()
    proc.wait()


@pytest.mark.parametrize("target", ["sleeper", "idle_python"])
def test_check_is_exact_for_quiescent_processes(target, request, capsys):
    """--check on a sleeping 'sleep' and an idle python: VmPTE equals the lower bound."""
    proc = request.getfixturevalue(target)
    assert main(["snapshot", "--check", str(proc.pid), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["pid", "vmpte_pages", "model_pt_pages", "lower", "upper", "exact"]
    assert doc["pid"] == proc.pid
    assert doc["lower"] <= doc["vmpte_pages"] <= doc["upper"]
    assert doc["exact"] is True


def test_snapshot_file_replays(sleeper, tmp_path, capsys):
    """-o writes maps and present ranges; the file loads back with the live VmPTE."""
    out = tmp_path / "snap.json"
    assert main(["snapshot", str(sleeper.pid), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    snap = load_snapshot(out)
    assert snap.pid == sleeper.pid and snap.vmas and snap.present
    assert all(v.path != "[vsyscall]" for v in snap.vmas)
    assert snap.quiescence == "blocked"


def test_pagemap_scan_agrees_with_entry_reads(idle_python):
    """PAGEMAP_SCAN (tiny buffer, so it resumes many times) equals the per-entry read."""
    snap = take_snapshot(idle_python.pid)
    fd = os.open(f"/proc/{idle_python.pid}/pagemap", os.O_RDONLY)
    try:
        read = pagemap_read(fd, snap.vmas)
        try:
            scanned = pagemap_scan(fd, snap.vmas[0].start, snap.vmas[-1].end, vec_len=3)
        except OSError as err:
            pytest.skip(f"this kernel has no PAGEMAP_SCAN: {err}")
    finally:
        os.close(fd)
    assert scanned == read == list(snap.present)
    assert sum(e - s for s, e in read) >= 1 << 24  # the 16 MiB it wrote


def test_missing_process_and_self_exit_2(capsys):
    """A pid that does not exist, or kpsim's own, is bad input: one line, exit 2."""
    assert main(["snapshot", "--check", "999999999"]) == 2
    assert capsys.readouterr().err == "kpsim snapshot: no process with pid 999999999\n"
    assert main(["snapshot", str(os.getpid())]) == 2
    assert "cannot snapshot itself" in capsys.readouterr().err
