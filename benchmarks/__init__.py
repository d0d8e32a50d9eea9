"""Benchmarks: timing only, run by hand, written up in docs/performance.md (never timed unit tests).

Each script runs as ``python -m benchmarks.<name> [options]`` from the repository root (``--help`` lists
the options); ``python -m benchmarks`` runs the parts of docs/performance.md. Shared helpers:
``benchmarks.common``. Experiments, tables and figure makers are in ``experiments/`` (its README).
"""
