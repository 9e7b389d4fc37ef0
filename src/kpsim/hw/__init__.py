"""Layer 1: simulated hardware (physical memory; arm64 descriptors, registers, MMU, TLB, CPUs)."""
