"""Turning the benchmarks' distributed files (and the built-in synthetic benchmark) into `datasets.DatasetDict`s.

The code lives here, in the installed package; `dataset_scripts/` at the repository root holds the thin
command-line entry points (`python dataset_scripts/msrvtt.py ...` or `python -m dataset_scripts.msrvtt ...`).
"""
