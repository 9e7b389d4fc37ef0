"""Linux arch/x86 (x86-64, 4-level paging) as far as kpkeys-style page-table protection
with PKS goes: the direct map, set_memory (CPA), TLB flushing, the kpkeys hooks."""
