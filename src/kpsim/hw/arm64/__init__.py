"""arm64 hardware: VMSAv8-64 stage-1 descriptors (4 KiB granule, 48-bit VA), POR_ELx,
ESR_ELx, the table walker and TLB, and CPUs with the load/store access API."""
