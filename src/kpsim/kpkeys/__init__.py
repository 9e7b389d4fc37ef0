"""Layer 4: the kpkeys feature: contexts and guards, kpkeys_hardened_pgtables (the seed's
allocator hooks), the early page-table allocator (PPA) and the v6 block allocator (PBA)."""
