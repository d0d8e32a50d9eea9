"""Benchmarks: run by hand, written up in docs/performance.md (never timed unit tests)."""
