"""Reliability suite: the production scheduler under load, faults and bad input, with nothing lost.

The helpers here (`_server`, `_apps`, `_scenarios`, `_misuse`) are shared with
`benchmarks/reliability.py`, which runs the same checks at a larger size and reports the figures.
"""
