"""kpsim.workloads (see DESIGN.md, Architecture)."""
