"""Linux arch/x86 (x86-64, 4-level paging) as far as kpkeys-style page-table protection
with PKS goes: the direct map, set_memory (CPA), TLB flushing, the kpkeys hooks.

Modules: ``memory`` (the layout), ``init`` (static image tables, ``init_mem_mapping``,
``mark_rodata_ro``), ``set_memory`` (CPA, DirectMap and split counters), ``pgtable``
(entries and the guarded writes), ``tlbflush``, ``kpkeys`` (IA32_PKRS contexts),
``lazy_mmu`` (lazy MMU, exceptions, context switch and CR3/PCID), ``pgtable_user``,
``vmalloc_arch``, ``direct_map_stats``, and ``arch`` (the composed :class:`X86`).

Counters an x86 machine adds to ``Machine.counters`` (the arm64 ones it shares keep
their meaning: ``pte_write``, ``kpkeys_guard_entries``, ``set_memory_pkey``,
``split_pud``/``split_pmd``...): ``pkrs_write`` (WRMSR to IA32_PKRS: x86's
``por_write``; there is no ``isb``), ``invlpg``, ``invpcid``, ``cr3_write``,
``tlb_shootdown`` and ``tlb_shootdown_ipi`` (IPIs to other CPUs), ``tlb_flush_all``,
``tlb_flush_kernel_range``, ``tlb_flush_user``, ``switch_mm``, ``pgd_ctor``,
``direct_map_level2_splits``/``direct_map_level3_splits`` (``/proc/vmstat``), and
``fault_pk``/``fault_prot``/``fault_not_present`` (#PF by kind). ``/proc/meminfo``'s
DirectMap lines are ``machine.arch.arch_report_meminfo()``.
"""
