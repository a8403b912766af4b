"""Benchmarks anyone can rerun; see README.md."""
