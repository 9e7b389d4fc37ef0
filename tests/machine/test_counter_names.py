"""One name per event: no two counter names differ only by a plural or separators
(issue 19 item 9: there were both ``por_write`` and ``por_writes``)."""

from kpsim.machine import boot
from kpsim.workloads.registry import run_workload


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace(".", "").replace("-", "").rstrip("s")


def test_no_near_duplicate_counter_names():
    """After a workload touching faults, fork, munmap and set_memory_pkey, the machine's
    counters have pairwise distinct normalised names, and por_write is the one spelling."""
    m = boot(memory="256M")
    run_workload(m, "micromm.fork", {"size": "4M", "h": 0}, seed=0)
    names = list(m.counters)
    seen: dict[str, str] = {}
    for n in names:
        assert _norm(n) not in seen, f"{n!r} and {seen[_norm(n)]!r} name one event"
        seen[_norm(n)] = n
    assert "por_write" in names and "por_writes" not in names
    assert m.counters["por_write"] == sum(c.por_writes for c in m.hw.cpus)
