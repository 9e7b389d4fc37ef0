"""Arch-neutral page-table and kpkeys helpers every architecture shares.

The Python form of Linux's generic fallbacks: ``include/linux/pgtable.h`` (the
``ptep_test_and_clear_young``, ``ptep_set_access_flags``, ``ptep_get_and_clear``...
defaults an arch keeps unless it defines ``__HAVE_ARCH_*``), ``include/asm-generic/``
and the arch-independent half of the kpkeys hooks. Each ``arch/<name>`` package builds
its mixins on these and supplies only what differs: the descriptor bits
(``PAGE_ACCESSED``: arm64's AF, x86's A), the pkey register (POR_EL1 + ISB, or WRMSR to
IA32_PKRS), exception entry and the TLB instructions. Nothing here names an
architecture (an import-linter contract).
"""
