#!/usr/bin/env bash
# Flakiness check: run the whole test suite N times, each in a different random order
# (pytest-randomly, a different seed per run), and fail on the first run with any failure.
#
#   bash scripts/flaky.sh 20            # the full check
#   bash scripts/flaky.sh 2             # CI's short form
#   bash scripts/flaky.sh 5 tests/reliability -x   # extra arguments go to pytest
#
# Each run prints its seed; reproduce a failing order with
#   python -m pytest -p randomly -p "no:cacheprovider" --randomly-seed=SEED
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-20}"
shift || true
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash scripts/flaky.sh N [pytest arguments...]  (N: how many runs, at least 1)" >&2
    exit 2
fi

python="${PYTHON:-python}"
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]]; then
    python=.venv/bin/python
fi
if ! "$python" -c "import pytest_randomly" 2>/dev/null; then
    echo "pytest-randomly is not installed for $python: pip install pytest-randomly" >&2
    exit 2
fi

# Different seeds per run, and per invocation of the script (so that 20 runs today and 20
# tomorrow try 40 orders); printed, so that any failing order can be replayed.
base=$(( $(date +%s) % 1000000 * 1000 ))
for i in $(seq 1 "$runs"); do
    seed=$(( base + i ))
    echo "=== run $i/$runs: --randomly-seed=$seed"
    if ! "$python" -m pytest -p randomly -p no:cacheprovider --randomly-seed="$seed" -q "$@"; then
        echo "FLAKY CHECK FAILED on run $i/$runs; replay with: $python -m pytest -p randomly --randomly-seed=$seed $*" >&2
        exit 1
    fi
done
echo "=== $runs run(s) in random order, no failure"
