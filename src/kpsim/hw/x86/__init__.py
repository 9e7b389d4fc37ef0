"""x86-64 hardware: 4-level paging, PCID TLB, protection keys (PKU/PKS), #PF values."""
