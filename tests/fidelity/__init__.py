"""The differential suite: every scenario runs in production and under the recorder, and the outcomes must agree.

- `_harness.py`: the probe an app reports to, the two engines, outcomes and their comparison.
- `_differences.py`: the accepted differences, the one table `docs/testing/fidelity.md` shows.
- `_scenarios_*.py`: the scenarios, each a small app and a request script.
- `test_fidelity.py`: the tests, and `KNOWN_GAPS`, the scenarios that still differ today.
"""
