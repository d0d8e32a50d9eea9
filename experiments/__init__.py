"""Experiments: the scripts, recipes and shell scripts behind the figures and tables of the docs.

Not part of the ``ramir`` package; ``experiments/README.md`` says which script produced what. Its Python
modules in ``default_v1/``, ``figures/``, ``robustness/`` and ``study/`` run from the repository root as
``python -m experiments.<folder>.<name>``.
"""
