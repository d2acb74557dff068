"""Benchmarks. Run from the repository root, e.g. ``python -m bench.latency``."""
