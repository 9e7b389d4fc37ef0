"""kpsim.kpkeys (see DESIGN.md, Architecture)."""
