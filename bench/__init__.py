"""Benchmarks against uv and pip, measured in the same run and reported as ratios (see bench/README.md)."""
