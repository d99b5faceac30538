"""Benchmarks of the original kind: re-implementations of published tasks (HalluLens' first)."""
