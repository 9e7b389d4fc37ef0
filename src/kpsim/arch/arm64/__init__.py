"""Layer 3: Linux ``arch/arm64``: memory layout, page-table helpers and guarded writes,
linear-map creation and splitting (mmu.c), pageattr (set_memory_*), TLB flushing, and
the kpkeys arch hooks (POR_EL1 contexts, exception entry, context switch)."""
