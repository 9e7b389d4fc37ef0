"""What the kpkeys feature needs from the architecture (the ``arch_*`` hooks)."""

from __future__ import annotations

from typing import Any, Protocol


class KpkeysArch(Protocol):
    hardened_pgtables: bool
    split_lock_depth: int
    static_tables: list[int]
    swapper_pg_dir: int
    k: Any  # the generic kernel (counters, page allocator)

    @property
    def cpu(self) -> Any: ...

    def system_supports_poe(self) -> bool: ...

    def arch_kpkeys_set_context(self, ctx: int) -> int: ...

    def arch_kpkeys_restore_pkey_reg(self, value: int) -> None: ...

    def set_memory_pkey(self, addr: int, numpages: int, pkey: int) -> int: ...

    def page_to_virt(self, pfn: int) -> int: ...

    def phys_to_virt(self, pa: int) -> int: ...

    def force_pte_mapping(self) -> bool: ...

    def pt_store_batch(self, table_pa: int, index: Any, values: Any) -> int: ...
