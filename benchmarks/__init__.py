"""Benchmarks (see benchmarks/README.md); scripts, not part of the installed package."""
