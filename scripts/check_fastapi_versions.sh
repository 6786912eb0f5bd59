#!/usr/bin/env bash
# The recorder captures FastAPI's own BackgroundTasks by hooking where FastAPI creates them, so
# check that hook on the oldest FastAPI this project supports (the minimum in pyproject.toml) and
# on the newest one published: for each, a fresh virtual environment outside this checkout gets the
# project and that FastAPI (pip picks the Starlette it needs), then the BackgroundTasks tests, their
# docs samples, the fidelity scenarios and the example apps' suites run.
#
#   bash scripts/check_fastapi_versions.sh             # oldest and newest
#   bash scripts/check_fastapi_versions.sh 0.140.0     # these versions instead
#
# PYTHON picks the interpreter the environments are made from (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
PYTHON=${PYTHON:-python3}

MINIMUM=$(sed -n 's/^ *"fastapi>=\([0-9][0-9.]*\)".*/\1/p' pyproject.toml)
if [[ -z "$MINIMUM" ]]; then
    echo "check_fastapi_versions.sh: found no \"fastapi>=X\" dependency in pyproject.toml" >&2
    exit 1
fi
if [[ $# -gt 0 ]]; then
    VERSIONS=("$@")
else
    VERSIONS=("$MINIMUM" newest)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastapi-tasks-versions.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in
"$ROOT"/*)
    echo "check_fastapi_versions.sh: the work directory $WORK is inside the checkout; set TMPDIR elsewhere" >&2
    exit 1
    ;;
esac

TESTS=(tests/test_background_tasks.py examples)
if [[ -e tests/fidelity/test_background_tasks.py ]]; then
    TESTS+=(tests/fidelity/test_background_tasks.py)
fi

for version in "${VERSIONS[@]}"; do
    venv="$WORK/fastapi-$version"
    "$PYTHON" -m venv "$venv"
    case "$version" in
    newest) requirement=fastapi label="the newest published" ;;
    "$MINIMUM") requirement="fastapi==$version" label="the oldest supported" ;;
    *) requirement="fastapi==$version" label="as asked" ;;
    esac
    # The test tools at the dev extra's minimums or later (pytest-xdist: a test runs the plugin under it);
    # nothing else of it (no queues, no Redis).
    "$venv/bin/python" -m pip install -q --upgrade "$ROOT" "$requirement" \
        "pytest>=8.3" "pytest-xdist>=3.6" "httpx>=0.27" "trio>=0.27" "asgi-lifespan>=2.1" "typing-extensions>=4.8"
    installed=$("$venv/bin/python" -c 'import fastapi, starlette; print(fastapi.__version__, starlette.__version__)')
    read -r fastapi_version starlette_version <<<"$installed"
    if [[ "$version" == "$MINIMUM" && "$fastapi_version" != "$MINIMUM" && "$fastapi_version" != "$MINIMUM.0" ]]; then
        echo "check_fastapi_versions.sh: asked for FastAPI $MINIMUM, got $fastapi_version" >&2
        exit 1
    fi
    echo "=== FastAPI $fastapi_version ($label), Starlette $starlette_version"
    # From a copy of the sources without the packages, so that the tests import fastapi_tasks
    # from the installed project, never from the checkout.
    rm -rf "$WORK/src" && mkdir "$WORK/src"
    cp -r tests examples docs conftest.py pyproject.toml README.md "$WORK/src/"
    options=()
    if ! "$venv/bin/python" -c 'from starlette.exceptions import StarletteDeprecationWarning' 2>/dev/null; then
        # Before Starlette 1.x: pyproject.toml's filterwarnings names this Starlette 1.x class, and
        # pytest refuses a filter whose class does not exist (nor is there such a warning to ignore);
        # and the TestClient of those Starlettes uses an alias that anyio>=4.14 deprecates.
        options=(-o "filterwarnings=error"
            -W "ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning")
    fi
    (
        cd "$WORK/src"
        "$venv/bin/python" -m pytest -q -p no:cacheprovider "${options[@]}" "${TESTS[@]}" \
            "tests/test_docs.py::test_snippet_project_passes[background_tasks]" \
            "tests/test_docs.py::test_snippet_project_passes[migration]"
    )
done
echo "=== the BackgroundTasks tests passed on every FastAPI checked: ${VERSIONS[*]}"
