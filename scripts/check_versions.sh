#!/usr/bin/env bash
# The whole test suite on the oldest and on the newest supported FastAPI, Starlette and anyio. The oldest
# Starlette is the oldest that the oldest FastAPI allows; the newest, what pip picks for the newest. For each,
# a fresh virtual environment outside this checkout gets the test tools, the pins and the project (without its
# dependencies, so that the pins stay), and the suite runs from a copy of the sources without the packages, so
# that the tests import the installed project. Every step is bounded by `timeout`. About 2 x (40 s install +
# 80 s suite) on 2 cores.
#
#   bash scripts/check_versions.sh                  # oldest and newest
#   bash scripts/check_versions.sh oldest           # one of them
#   bash scripts/check_versions.sh "fastapi==0.115.14 anyio==4.0.0"   # these pins instead
#
# The oldest are the floors of pyproject.toml's "fastapi>=X" and "anyio>=Y". PYTHON picks the interpreter
# (default: python3); PYTEST_ARGS adds pytest options (default: -n 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
PYTHON=${PYTHON:-python3}

floor() { sed -n "s/^ *\"$1>=\([0-9][0-9.]*\).*/\1/p" pyproject.toml | head -n 1; }
FASTAPI_MIN=$(floor fastapi)
ANYIO_MIN=$(floor anyio)
if [[ -z "$FASTAPI_MIN" || -z "$ANYIO_MIN" ]]; then
    echo "check_versions.sh: found no \"fastapi>=X\" or \"anyio>=Y\" dependency in pyproject.toml" >&2
    exit 1
fi
# The test tools the oldest pins need: anyio < 4.1 calls trio.to_thread.run_sync(cancellable=), which trio
# 0.23 deprecates and later trios removed; Starlette < 0.37's TestClient passes httpx the `app=` shortcut
# that httpx 0.27 deprecates and 0.28 removed.
OLDEST="fastapi==$FASTAPI_MIN anyio==$ANYIO_MIN"
if [[ "$ANYIO_MIN" == 4.0* ]]; then OLDEST+=" trio==0.22.2"; fi
if [[ "$FASTAPI_MIN" =~ ^0\.(109|110|111|112)(\.|$) ]]; then OLDEST+=" httpx==0.26.0"; fi
# anyio's pytest plugin before 4.16 imports _pytest.python.CallSpec2, which pytest 9.2 deprecates with a
# PytestRemovedIn10Warning that the suite's filterwarnings = error turns into an error at plugin load.
OLDEST+=" pytest<9.2"
NEWEST="fastapi anyio trio httpx"
if [[ $# -eq 0 ]]; then
    set -- oldest newest
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastapi-tasks-versions.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in
"$ROOT"/*)
    echo "check_versions.sh: the work directory $WORK is inside the checkout; set TMPDIR elsewhere" >&2
    exit 1
    ;;
esac

# Everything the suite imports (the test extra, and the queues of the dispatch tests), without the build and
# lint tools.
TOOLS=("pytest>=8.3" "pytest-xdist>=3.6" "pytest-cov>=6" "pytest-randomly>=3.15" "typing-extensions>=4.8"
    "freezegun>=1.5" "asgi-lifespan>=2.1" "uvicorn>=0.30" "hypercorn>=0.16" "taskiq>=0.11.18" "taskiq-redis>=1.0"
    "celery[redis]>=5.4" "redis>=5" "sniffio" "httpx>=0.26" "trio>=0.22")

mkdir "$WORK/src"
cp -r tests examples docs conftest.py pyproject.toml README.md "$WORK/src/"

n=0
for spec in "$@"; do
    n=$((n + 1))
    case "$spec" in
    oldest) pins=$OLDEST label="the oldest supported" ;;
    newest) pins=$NEWEST label="the newest published" ;;
    *) pins=$spec label="as asked" ;;
    esac
    venv="$WORK/venv-$n"
    "$PYTHON" -m venv "$venv"
    # shellcheck disable=SC2086 # the pins are words
    timeout 600 "$venv/bin/python" -m pip install -q "${TOOLS[@]}" $pins
    if [[ "$spec" == oldest ]]; then
        # The oldest Starlette that FastAPI allows (pip picks the newest).
        starlette_min=$("$venv/bin/python" -c 'import importlib.metadata as m, re
print(next(re.search(r">=\s*([0-9.]+)", r).group(1) for r in m.requires("fastapi") if r.startswith("starlette")))')
        timeout 300 "$venv/bin/python" -m pip install -q "starlette==$starlette_min"
    fi
    timeout 300 "$venv/bin/python" -m pip install -q --no-deps "$ROOT"
    read -r fastapi_v starlette_v anyio_v < <("$venv/bin/python" -c 'import fastapi, starlette, importlib.metadata as m
print(fastapi.__version__, starlette.__version__, m.version("anyio"))')
    if [[ "$spec" == oldest && ("$fastapi_v" != "$FASTAPI_MIN"* || "$anyio_v" != "$ANYIO_MIN"*) ]]; then
        echo "check_versions.sh: asked for FastAPI $FASTAPI_MIN and anyio $ANYIO_MIN, got $fastapi_v and $anyio_v" >&2
        exit 1
    fi
    echo "=== $label: FastAPI $fastapi_v, Starlette $starlette_v, anyio $anyio_v"
    (
        cd "$WORK/src"
        # shellcheck disable=SC2086 # PYTEST_ARGS are words
        timeout 900 "$venv/bin/python" -m pytest -q -p no:cacheprovider -p no:randomly --no-cov ${PYTEST_ARGS:--n 2}
    )
done
echo "=== the whole suite passed on: $*"
