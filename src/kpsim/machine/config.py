"""Machine and kernel configuration, validated (bad values are ``ConfigError``: exit 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kpsim.errors import ConfigError
from kpsim.hw.arm64.system import MAX_CPUS
from kpsim.mm.fault_inject import SITES, FaultSpec, parse_fault_spec
from kpsim.mm.kpkeys_series import DEFAULT_SERIES, SERIES, SERIES_NAMES
from kpsim.units import SZ_1G, SZ_2M, format_size, parse_size

LINEAR_MAP_POLICIES = ("pte", "block")
#: the simulated architectures (``kpsim --arch``, a scenario's ``[machine] arch``)
ARCHES: tuple[str, ...] = ("arm64", "x86")
#: each architecture's defaults for the fields left unset: DRAM base and linear-map
#: policy (arm64: DRAM at 1 GiB, a PTE-mapped linear map as rodata=full without BBML2
#: gives; x86: RAM from 0, a direct map of 1 GiB/2 MiB pages as Linux builds it)
ARCH_DEFAULTS: dict[str, tuple[int, str]] = {
    "arm64": (0x4000_0000, "pte"),
    "x86": (0, "block"),
}
#: the x86-64 direct map covers 64 TiB with 4-level paging
MAX_MEMORY_X86 = 64 << 40
ALLOCATORS: tuple[str, ...] = ("minimal", "pba", "grouped", "reserve")
MIN_MEMORY = 256 << 20
MAX_MEMORY = 1 << 47  # the 48-bit linear map covers 128 TiB
#: A host limit, not an architectural one: a PTE-mapped linear map holds one PTE per 4K
#: of RAM, which the model stores (1T: ~2.5 GB of host memory, ~10 s to boot; 16T would
#: need ~40 GB). Larger machines use --linear-map block (128T boots in under a second).
MAX_PTE_LINEAR_MEMORY = 1 << 40


@dataclass(frozen=True)
class MachineConfig:
    """What a machine is: architecture, memory, DRAM base, CPUs, POE, and kernel options.

    ``arch`` (``"arm64"``, the default, or ``"x86"``: x86-64 with PKS; ``poe`` then
    means the CPUs implement PKS), ``memory`` (bytes, or a size such as ``"1G"``: 256M
    to 128T, 64T on x86, a multiple of 2M),
    ``dram_base`` (2M-aligned; 0 on x86; default the arch's), ``cpus``, ``poe``
    (FEAT_S1POE), ``linear_map`` (``"pte"`` or ``"block"``; default the arch's),
    ``hardened_pgtables`` (the feature), ``allocator``
    (the kpkeys table allocator; None: the series' choice, see
    :attr:`effective_allocator`), ``batching`` (lazy-MMU batching of guarded writes),
    ``pt_reclaim``, ``allow_unsafe_split`` (the minimal or grouped allocator on a block
    map, which Linux refuses), ``series`` (the posting modelled), ``seed``. An
    impossible value raises :class:`~kpsim.errors.ConfigError`.
    """

    memory: int = 4 * SZ_1G
    #: -1: the architecture's default (arm64 0x4000_0000, x86 0)
    dram_base: int = -1
    cpus: int = 2
    poe: bool = True
    #: "": the architecture's default (arm64 "pte", x86 "block")
    linear_map: str = ""
    hardened_pgtables: bool = True
    allocator: str | None = None  # None: the series' (see effective_allocator)
    batching: bool = True
    pt_reclaim: bool = True
    allow_unsafe_split: bool = False
    series: str = DEFAULT_SERIES
    seed: int = 0
    #: fault injection (:mod:`kpsim.mm.fault_inject`): a spec per site, None for off
    fail_page_alloc: str | None = None
    fail_pagetable_alloc: str | None = None
    fail_set_memory_pkey: str | None = None
    fail_split: str | None = None
    fail_pba_refill: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    arch: str = "arm64"

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ConfigError(f"unknown architecture {self.arch!r} (use {', '.join(ARCHES)})")
        base, policy = ARCH_DEFAULTS[self.arch]
        if self.dram_base == -1:
            object.__setattr__(self, "dram_base", base)
        if not self.linear_map:
            object.__setattr__(self, "linear_map", policy)
        if isinstance(self.memory, str):
            object.__setattr__(self, "memory", parse_size(self.memory, what="memory"))
        if not MIN_MEMORY <= self.memory <= MAX_MEMORY:
            raise ConfigError(
                f"memory must be between 256M and 128T, got {format_size(self.memory)}"
            )
        if self.memory % SZ_2M:
            raise ConfigError(f"memory must be a multiple of 2M, got {format_size(self.memory)}")
        if self.dram_base % SZ_2M or self.dram_base < 0:
            raise ConfigError(f"DRAM base must be 2M-aligned, got {self.dram_base:#x}")
        if self.arch == "x86" and self.dram_base != 0:
            raise ConfigError(f"x86 RAM starts at physical 0, got DRAM base {self.dram_base:#x}")
        if self.arch == "x86" and self.memory > MAX_MEMORY_X86:
            raise ConfigError(
                f"memory must be at most 64T on x86 (the 4-level direct map), "
                f"got {format_size(self.memory)}"
            )
        if self.dram_base + self.memory > 1 << 48:
            raise ConfigError("DRAM must lie below 2^48 (48-bit physical addresses)")
        if not 1 <= self.cpus <= MAX_CPUS:
            raise ConfigError(f"cpus must be between 1 and {MAX_CPUS}, got {self.cpus}")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")
        if self.linear_map not in LINEAR_MAP_POLICIES:
            raise ConfigError(f"unknown linear map policy {self.linear_map!r} (use pte or block)")
        if self.series not in SERIES:
            raise ConfigError(f"unknown series {self.series!r} (use {', '.join(SERIES_NAMES)})")
        if self.allocator is not None and self.allocator not in ALLOCATORS:
            raise ConfigError(f"unknown allocator {self.allocator!r} (use {', '.join(ALLOCATORS)})")
        if self.linear_map == "pte" and self.memory > MAX_PTE_LINEAR_MEMORY:
            raise ConfigError(
                f"memory {format_size(self.memory)} with a PTE-mapped linear map: more than the "
                "model can hold (one PTE per 4K, at most 1T); use less, or a block-mapped "
                "linear map (--linear-map block)"
            )
        self.fault_specs()  # a bad spec is a ConfigError now, not at boot

    def fault_specs(self) -> dict[str, FaultSpec]:
        """The armed fault-injection sites, parsed (``ConfigError`` on a bad spec)."""
        out: dict[str, FaultSpec] = {}
        for site in SITES:
            text = getattr(self, f"fail_{site}")
            if text is not None:
                out[site] = parse_fault_spec(site, text)
        return out

    def boot_problem(self) -> str | None:
        """Why ``Machine.boot`` would refuse this configuration (``None``: it would not):
        the cross-field policy that needs the whole configuration."""
        if (
            self.hardened_pgtables
            and self.poe
            and self.linear_map == "block"
            and self.effective_allocator in ("minimal", "grouped")
            and not self.allow_unsafe_split
        ):
            return (
                f"the {self.effective_allocator} allocator"
                + (f" (series {self.series}'s)" if self.allocator is None else "")
                + " needs a PTE-mapped linear map: keying "
                "a block mapping splits it, and the split's new table page must be keyed too "
                "(recursion); use --linear-map pte, --allocator pba, or --allow-unsafe-split "
                "to see it happen"
            )
        return None

    @property
    def unsafe(self) -> str | None:
        """Why this configuration leaves table pages unprotected (the minimal or grouped
        allocator on a block-mapped linear map, allowed by ``allow_unsafe_split``), or
        None. The CLI prints it as a warning."""
        if not (self.hardened_pgtables and self.poe and self.linear_map == "block"):
            return None
        if self.effective_allocator not in ("minimal", "grouped") or not self.allow_unsafe_split:
            return None
        return (
            f"the {self.effective_allocator} allocator on a block-mapped linear map "
            "(--allow-unsafe-split): keying a table page splits a block whose new table "
            "page is left unprotected (the recursion Linux would deadlock on); results "
            "show that unsafe state, the audit reports it"
        )

    @property
    def effective_allocator(self) -> str:
        """The allocator in use: ``allocator`` if given, else the series' (``pba`` where
        the series uses the block allocator, ``minimal`` otherwise)."""
        if self.allocator is not None:
            return self.allocator
        series = SERIES[self.series]
        if series.pba or (self.linear_map == "block" and series.block_pba):
            return "pba"
        return "minimal"

    def as_dict(self) -> dict[str, object]:
        """The configuration as the ``config`` section of ``kpsim boot --json`` (``arch``
        only for x86, so that arm64 documents stay as they were)."""
        return (
            ({"arch": self.arch} if self.arch != "arm64" else {})
            | {
                "memory_bytes": self.memory,
                "dram_base": f"{self.dram_base:#x}",
                "cpus": self.cpus,
                "poe": self.poe,
                "linear_map": self.linear_map,
                "hardened_pgtables": self.hardened_pgtables,
                "allocator": self.effective_allocator,
                "batching": self.batching,
                "pt_reclaim": self.pt_reclaim,
                "allow_unsafe_split": self.allow_unsafe_split,
                "series": self.series,
                "seed": self.seed,
            }
            | self._fault_dict()
        )

    def _fault_dict(self) -> dict[str, object]:
        """``fault_inject``: only when a site is armed (documents stay as they were)."""
        specs = self.fault_specs()
        if not specs:
            return {}
        return {"fault_inject": {site: spec.as_dict() for site, spec in specs.items()}}
