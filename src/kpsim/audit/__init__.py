"""Layer 6: observers that check a machine's invariants without changing it."""
