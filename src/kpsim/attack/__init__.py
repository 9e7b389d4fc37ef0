"""kpsim.attack (see DESIGN.md, Architecture)."""
