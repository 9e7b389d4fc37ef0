"""kpsim.arch (see DESIGN.md, Architecture)."""
