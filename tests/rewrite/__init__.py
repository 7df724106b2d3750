"""Slicing tests (a package so its module names do not clash with tests/graph's)."""
