"""kpsim.mm (see DESIGN.md, Architecture)."""
