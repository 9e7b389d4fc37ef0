"""kpsim.audit (see DESIGN.md, Architecture)."""
