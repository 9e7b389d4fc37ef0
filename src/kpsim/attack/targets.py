"""Attack targets: which page-table entry the attacker overwrites, with what, and why.

The attacker's write is a kernel store to the *linear-map alias* of a table page (how
a data-only primitive reaches a page table: ``__va(pte_pa)``, the same pointer the
kernel's own helpers use). For each target class the value written is the one that
gives the attacker the most:

- ``user_pte``: an empty slot of a victim process's PTE table receives a user
  read-write page descriptor pointing at kernel memory (a kernel text page, or the
  victim's own PTE table page: then user space edits its own page tables);
- ``linear_pte``/``linear_pmd``/``linear_pud`` and ``vmalloc_pte``: a read-write
  kernel leaf (page, 2 MiB or 1 GiB block) whose output covers a kernel text or
  rodata page, making that read-only page writable at the entry's address;
- ``kimage_pud``: the kernel image's PUD entry (a static table of the image) becomes a
  read-write 1 GiB block over the image.

What a landed write gained is judged by walking the tables afresh (the attacker
cannot issue TLBI or INVLPG: a landed descriptor takes effect once the old TLB entry
is evicted), and for ``user_pte`` by a real user-mode access (EL0, CPL 3) from the
victim.

Written once for both architectures: levels are Linux's (0 PGD .. 3 PTE); what reads
descriptors, faults and the pkey register is the machine's
:class:`~kpsim.attack.ops.AttackOps` (:mod:`kpsim.attack.arm64`,
:mod:`kpsim.attack.x86`). On x86 "the linear map" is the direct map at
``PAGE_OFFSET`` and the kernel image mapping is at ``__START_KERNEL_map``
(``kimage_pud`` is ``level3_kernel_pgt``'s entry for the image).

Models no kernel file; the entries are found as the KUnit cases of
``mm/tests/kpkeys_hardened_pgtables_kunit.c`` find theirs (walk ``swapper_pg_dir`` or
the victim's PGD).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kpsim.attack.ops import LEVEL_SHIFT, AttackOps, level_size, ops_for
from kpsim.machine.boot import Machine
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_PGTABLES
from kpsim.mm.mmap import PROT_READ, PROT_WRITE
from kpsim.mm.process import Process
from kpsim.mm.vmalloc import vmalloc

PAGE = 4096
VICTIM_PAGES = 64
VMALLOC_PAGES = 16
CLASS_LEVELS = {
    "user_pte": (3,),
    "linear_pte": (3,),
    "linear_pmd": (2,),
    "linear_pud": (1,),
    "vmalloc_pte": (3,),
    "kimage_pud": (1,),
    "kimage_alias": (1, 2, 3),  # the image's static tables, through the image's own mapping
}
Table = tuple[int, int, int]  # (table pa, VA of its entry 0, level)


@dataclass(slots=True)
class Target:
    """One write: where (entry), what (value), and what it would give (gain_va -> gain_pa)."""

    cls: str
    entry_pa: int
    ptr: int  # the kernel VA the attacker stores to
    level: int
    value: int
    root_pa: int  # table root the gain is walked from
    gain_va: int
    gain_pa: int
    what: str  # "kernel text", "kernel rodata", "page table"
    table_keyed: bool


@dataclass(slots=True)
class Arena:
    """What the campaign set up on the machine: victim, worker, vmalloc area, tables."""

    m: Machine
    ops: AttackOps
    attacker: int
    other: int | None
    victim: Process
    victim_addr: int
    worker: Process | None
    vmalloc_addr: int
    tables: dict[str, list[Table]] = field(default_factory=dict)

    @property
    def arch(self) -> Any:
        return self.m.arch


def build_arena(m: Machine, attacker: int) -> Arena:
    """Create the victim process (on another CPU if there is one), a worker, a vmalloc area."""
    ncpus = m.config.cpus
    other = (attacker + 1) % ncpus if ncpus > 1 else None
    victim = Process.create(m, "victim", cpu=other if other is not None else attacker)
    addr = victim.mmap(None, VICTIM_PAGES * PAGE, PROT_READ | PROT_WRITE)
    victim.touch(addr, write=True)  # the PTE table exists; the other slots stay empty
    worker = Process.create(m, "worker", cpu=other) if other is not None else None
    va = vmalloc(m.k, VMALLOC_PAGES * PAGE)
    arena = Arena(m, ops_for(m.arch), attacker, other, victim, addr, worker, va)
    for cls in CLASS_LEVELS:
        arena.tables[cls] = class_tables(arena, cls)
    return arena


def class_range(arena: Arena, cls: str) -> tuple[int, int]:
    """The VA range whose entries the class targets."""
    m, ops = arena.m, arena.ops
    if cls == "user_pte":
        return arena.victim_addr + PAGE, arena.victim_addr + VICTIM_PAGES * PAGE
    if cls == "vmalloc_pte":
        return arena.vmalloc_addr, arena.vmalloc_addr + VMALLOC_PAGES * PAGE
    if cls == "kimage_pud":
        return ops.kimage_va(m), ops.kimage_va(m) + 1
    if cls == "kimage_alias":
        return ops.kimage_va(m), ops.kimage_va(m) + ops.kimage_size(m)
    lo = m.arch.phys_to_virt(m.config.dram_base)
    return lo, lo + m.config.memory


def class_root(arena: Arena, cls: str) -> int:
    return arena.victim.mm.pgd_pa if cls == "user_pte" else int(arena.m.arch.swapper_pg_dir)


def class_tables(arena: Arena, cls: str) -> list[Table]:
    """(table pa, VA of its entry 0, level) of every table holding an entry of the class."""
    levels = CLASS_LEVELS[cls]
    lo, hi = class_range(arena, cls)
    ops = arena.ops
    base = 0 if cls == "user_pte" else ops.kernel_pgd_base
    out: list[Table] = []
    stack = [(class_root(arena, cls), 0, base)]
    mem = arena.m.mem
    while stack:
        pa, lvl, va0 = stack.pop()
        if lvl in levels:
            out.append((pa, va0, lvl))
        if lvl == max(levels):
            continue
        frame = mem.frame_ro(pa >> 12)
        shift = LEVEL_SHIFT[lvl]
        for i in ops.table_slots(frame, lvl):
            va = va0 + (i << shift)
            if va + (1 << shift) > lo and va < hi:
                stack.append((ops.table_pa(int(frame[i])), lvl + 1, va))
    return sorted(out)


def is_keyed(m: Machine, pa: int, ops: AttackOps | None = None) -> bool:
    """Does the linear-map alias of ``pa`` carry the page-table pkey (read afresh from
    the tables)?"""
    return (ops or ops_for(m.arch)).linear_pkey(m, pa) == KPKEYS_PKEY_PGTABLES


def table_order(arena: Arena, cls: str, rng: random.Random) -> list[Table]:
    """Tables in the order the attacker tries them: unkeyed ones first (the weak spots)."""
    tables = list(arena.tables[cls])
    rng.shuffle(tables)
    return sorted(tables, key=lambda t: is_keyed(arena.m, t[0], arena.ops))


def pick_target(arena: Arena, cls: str, table: Table, rng: random.Random) -> Target:
    """A random entry of ``table`` in the class's range, and its malicious value."""
    m, ops = arena.m, arena.ops
    tpa, va0, level = table
    shift = LEVEL_SHIFT[level]
    lo, hi = class_range(arena, cls)
    frame = m.mem.frame_ro(tpa >> 12)
    want_empty = cls == "user_pte"  # a fresh slot: no stale TLB entry can hide the result
    first = max(0, (lo - va0) >> shift)
    last = min(511, (hi - 1 - va0) >> shift)
    idx = [i for i in range(first, last + 1) if (int(frame[i]) == 0) == want_empty]
    if not idx:
        raise LookupError(f"{cls}: no entry to target in table {tpa:#x}")
    i = rng.choice(idx)
    entry_pa = tpa + 8 * i
    entry_va = va0 + (i << shift)
    kpa, what = _kernel_page(arena, rng)
    if cls == "user_pte" and rng.random() < 0.5:
        kpa, what = tpa, "page table"
    return Target(
        cls,
        entry_pa,
        _alias(arena, cls, entry_pa),
        level,
        ops.malicious(kpa, level, user=cls == "user_pte"),
        class_root(arena, cls),
        entry_va + (kpa & (level_size(level) - 1)),
        kpa,
        what,
        is_keyed(m, tpa, ops),
    )


def _alias(arena: Arena, cls: str, pa: int) -> int:
    """The VA the attacker stores to: for ``kimage_alias`` the image's own alias of the
    table where the image maps it (the static tables; on x86 a table of a split of an
    image page lies outside the image, and its only alias is the direct map's), the
    linear-map alias (``__va``) otherwise."""
    if cls == "kimage_alias":
        va = arena.ops.image_alias(arena.m, pa)
        if va is not None:
            return va
    return int(arena.m.arch.phys_to_virt(pa))


def _kernel_page(arena: Arena, rng: random.Random) -> tuple[int, str]:
    """A page of the kernel image's text or rodata (read-only in every honest mapping)."""
    ops = arena.ops
    off = rng.randrange(0, ops.ro_size, PAGE)
    what = "kernel text" if off < ops.text_size else "kernel rodata"
    return arena.m.arch.kimage_pa + off, what


def kernel_gain(arena: Arena, t: Target, old: int) -> dict[str, object] | None:
    """A read-only kernel page made writable in kernel mode? (a fresh walk from the root,
    with the attacker CPU's pkey register)."""
    cpu = arena.m.hw.cpus[arena.attacker]
    if not arena.ops.kernel_writable(arena.m, cpu, t.root_pa, t.gain_va, t.gain_pa):
        return None
    return {
        "gain": "writable_readonly_page",
        "va": f"{t.gain_va:#x}",
        "pa": f"{t.gain_pa:#x}",
        "what": t.what,
        **arena.ops.entry_change(old, t.value, t.level),
    }


def user_gain(arena: Arena, t: Target, old: int, *, live: bool) -> dict[str, object] | None:
    """A kernel page reachable from the victim's user space? A user-mode access when
    ``live`` (the victim runs on its CPU and loads, then stores the byte back), else a
    fresh walk."""
    ops = arena.ops
    read_key, write_key, proof = ops.user_words
    if not live:
        cpu = arena.m.hw.cpus[arena.victim.cpu]
        rights = ops.user_rights(arena.m, cpu, t.root_pa, t.gain_va, t.gain_pa)
        if rights is None:
            return None
        read, write = rights
    else:
        with arena.victim.kernel():
            cpu = arena.arch.cpu
            byte = ops.user_load(cpu, t.gain_va)
            if byte is None:
                return None
            read = byte == arena.m.mem.read(t.gain_pa, 1)
            write = ops.user_store(cpu, t.gain_va, byte)
    if not read:
        return None
    return {
        "gain": "kernel_page_reachable_from_user",
        "va": f"{t.gain_va:#x}",
        "pa": f"{t.gain_pa:#x}",
        "what": t.what,
        read_key: read,
        write_key: write,
        "checked_by": proof if live else "fresh walk",
        **ops.entry_change(old, t.value, t.level),
    }


def restore(arena: Arena, entry_pa: int, old: int) -> None:
    """Undo a landed write (the campaign's bookkeeping, not the attacker's): put the old
    descriptor back and drop every CPU's cached translations of the changed range."""
    arena.m.mem.write64(entry_pa, old)
    for cpu in arena.m.hw.cpus:
        arena.ops.drop_tlb(cpu)
