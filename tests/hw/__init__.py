"""Tests of the simulated hardware (kpsim.hw)."""
