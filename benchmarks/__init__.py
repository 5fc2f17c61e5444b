"""Benchmarks of atomic-publish: `python -m benchmarks` (see docs/performance.md)."""
