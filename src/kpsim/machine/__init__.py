"""kpsim.machine (see DESIGN.md, Architecture)."""
