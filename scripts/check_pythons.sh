#!/usr/bin/env bash
# The test suite on every supported Python other than CI's main one (3.11): for each of 3.10, 3.12
# and 3.13, a fresh virtual environment outside this checkout gets the project (editable, with its
# dev extra), then the README's test suite runs from the checkout on that Python, without coverage
# (CI's main run measures it) and in file order. Stops at the first Python with a failure.
#
#   bash scripts/check_pythons.sh                # 3.10, 3.12 and 3.13
#   bash scripts/check_pythons.sh 3.13           # these versions instead
#   bash scripts/check_pythons.sh 3.10 -- -x tests/test_tasks.py   # extra pytest arguments
#
# An interpreter is found as ~/.pyenv/versions/X.Y.*/bin/python, else as pythonX.Y on PATH.
# Redis-backed integration tests run when FASTAPI_TASKS_REDIS_URL is set (.ci/run sets it), and skip
# themselves otherwise, as in the main run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)

VERSIONS=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    VERSIONS+=("$1")
    shift
done
[[ $# -gt 0 ]] && shift # the "--"
EXTRA=("$@")
if [[ ${#VERSIONS[@]} -eq 0 ]]; then
    VERSIONS=(3.10 3.12 3.13)
fi

# A pyenv shim on PATH may exist and still refuse to run, so each candidate must run and be X.Y.
find_python() {
    local version=$1 candidate
    for candidate in "$HOME"/.pyenv/versions/"$version".*/bin/python "$(command -v "python$version" 2>/dev/null || true)"; do
        if [[ -x "$candidate" ]] &&
            [[ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$version" ]]; then
            echo "$candidate"
            return
        fi
    done
    return 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastapi-tasks-pythons.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in
"$ROOT"/*)
    echo "check_pythons.sh: the work directory $WORK is inside the checkout; set TMPDIR elsewhere" >&2
    exit 1
    ;;
esac

for version in "${VERSIONS[@]}"; do
    if ! python=$(find_python "$version"); then
        echo "check_pythons.sh: no Python $version found (~/.pyenv/versions/$version.* or python$version on PATH)" >&2
        exit 1
    fi
    venv="$WORK/py$version"
    "$python" -m venv "$venv"
    # pip's output (its warnings included) is shown only when the install fails.
    if ! { "$venv/bin/python" -m pip install -q --upgrade pip &&
        "$venv/bin/python" -m pip install -q -e "$ROOT[dev]"; } >"$WORK/pip-$version.log" 2>&1; then
        cat "$WORK/pip-$version.log" >&2
        echo "=== FAILED: Python $version: could not install the project with its dev extra" >&2
        exit 1
    fi
    # pip picks the newest FastAPI and Starlette each Python can have: older ones on 3.10.
    "$venv/bin/python" -W ignore -c '
import sys
from importlib.metadata import version
names = ("fastapi", "starlette", "anyio", "pytest")
print(f"=== Python {sys.version.split()[0]} (" + sys.argv[1] + "): " + ", ".join(f"{n} {version(n)}" for n in names))
' "$python"
    start=$SECONDS
    # No bytecode and no cache written into the checkout: other runs share it.
    if ! PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -n 2 -p no:randomly -p no:cacheprovider \
        --no-cov "${EXTRA[@]}"; then
        echo "=== FAILED: the test suite on Python $version ($((SECONDS - start)) s)" >&2
        exit 1
    fi
    echo "=== passed on Python $version ($((SECONDS - start)) s)"
    rm -rf "$venv"
done
echo "=== the test suite passed on every Python checked: ${VERSIONS[*]}"
