"""kpsim.report (see DESIGN.md, Architecture)."""
