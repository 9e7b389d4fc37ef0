"""kpsim.arch.arm64 (see DESIGN.md, Architecture)."""
