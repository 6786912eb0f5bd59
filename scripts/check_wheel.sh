#!/usr/bin/env bash
# What a user installs is what we test: build the sdist and the wheel, check their metadata and
# contents, install the wheel into a fresh virtual environment outside this checkout, and run the
# example app's suite and the pytest plugin's and recorder's tests against the installed wheel,
# with nothing imported from the checkout.
#
# Run it from the dev environment (`python -m pip install -e '.[dev]'`, which brings `build` and
# `twine`): bash scripts/check_wheel.sh. PYTHON picks another interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
PYTHON=${PYTHON:-python}

for tool in build twine; do
    if ! "$PYTHON" -c "import $tool" 2>/dev/null; then
        echo "check_wheel.sh: $PYTHON has no '$tool'; install the dev extra: python -m pip install -e '.[dev]'" >&2
        exit 1
    fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastapi-tasks-wheel.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in
"$ROOT"/*)
    echo "check_wheel.sh: the work directory $WORK is inside the checkout; set TMPDIR elsewhere" >&2
    exit 1
    ;;
esac

echo "--- build: the sdist, then the wheel from the unpacked sdist"
if ! "$PYTHON" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    exit 1
fi
SDIST=$(find "$WORK/dist" -name '*.tar.gz')
WHEEL=$(find "$WORK/dist" -name '*.whl')
echo "built $(basename "$SDIST") and $(basename "$WHEEL")"

echo "--- metadata: twine check --strict"
"$PYTHON" -m twine check --strict "$SDIST" "$WHEEL"

echo "--- contents: both packages, both py.typed, the plugin's entry point, LICENSE, the metadata"
"$PYTHON" - "$ROOT" "$SDIST" "$WHEEL" <<'PY'
import configparser
import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

root, sdist_path, wheel_path = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
packages = ["fastapi_tasks", "fastapi_tasks_testing"]
problems = []

# Every module and marker file of the two packages, as they are in this checkout.
sources = sorted(
    str(path.relative_to(root))
    for package in packages
    for path in (root / package).rglob("*")
    if path.is_file() and "__pycache__" not in path.parts
)
for package in packages:
    if f"{package}/py.typed" not in sources:
        problems.append(f"{package}/py.typed is missing from the checkout")

with zipfile.ZipFile(wheel_path) as wheel:
    names = set(wheel.namelist())
    [dist_info] = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
    problems += [f"wheel: {name} is missing" for name in sources if name not in names]
    problems += [
        f"wheel: {name} does not belong in it"
        for name in sorted(names)
        if name.split("/")[0] not in (*packages, dist_info)
    ]
    entry_points = configparser.ConfigParser()
    if f"{dist_info}/entry_points.txt" in names:
        entry_points.read_string(wheel.read(f"{dist_info}/entry_points.txt").decode())
    pytest11 = dict(entry_points["pytest11"]) if entry_points.has_section("pytest11") else {}
    if pytest11 != {"fastapi_tasks": "fastapi_tasks_testing._entry_point"}:
        problems.append("wheel: the pytest11 entry point is not fastapi_tasks = fastapi_tasks_testing._entry_point")
    license_name = f"{dist_info}/licenses/LICENSE"
    if license_name not in names:
        problems.append(f"wheel: {license_name} is missing")
    elif wheel.read(license_name) != (root / "LICENSE").read_bytes():
        problems.append(f"wheel: {license_name} differs from LICENSE")
    metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())

expected = {
    "Name": project["name"],
    "Version": project["version"],
    "License-Expression": project["license"],
    "License-File": "LICENSE",
    "Requires-Python": project["requires-python"],
    "Description-Content-Type": "text/markdown",
}
for field, value in expected.items():
    if metadata[field] != value:
        problems.append(f"wheel METADATA: {field} is {metadata[field]!r}, expected {value!r}")
requires = [req for req in metadata.get_all("Requires-Dist") or [] if "extra ==" not in req]


def requirement(text: str) -> tuple[str, list[str]]:
    # The name and its specifiers, in any order (the build backend sorts them its own way).
    name, specifiers = re.fullmatch(r"([A-Za-z0-9_.\-]+)(.*)", re.sub(r"\s", "", text)).groups()
    return name, sorted(filter(None, specifiers.split(",")))


if sorted(map(requirement, requires)) != sorted(map(requirement, project["dependencies"])):
    problems.append(f"wheel METADATA: Requires-Dist {requires} differs from {project['dependencies']}")
extras = sorted(metadata.get_all("Provides-Extra") or [])
if extras != sorted(project["optional-dependencies"]):
    problems.append(f"wheel METADATA: Provides-Extra {extras} differs from pyproject's extras")

with tarfile.open(sdist_path) as sdist:
    members = {name.partition("/")[2] for name in sdist.getnames()}
    wanted = ["LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO", *sources]
    problems += [f"sdist: {name} is missing" for name in wanted if name not in members]

if problems:
    print("\n".join(f"- {problem}" for problem in problems), file=sys.stderr)
    sys.exit(1)
print(f"{len(sources)} package files, entry point, LICENSE and metadata as expected in both archives")
PY

echo "--- a fresh virtual environment, outside the checkout, with the wheel and its dev extra"
"$PYTHON" -m venv "$WORK/venv"
VENV_PYTHON="$WORK/venv/bin/python"
if ! "$VENV_PYTHON" -m pip install --disable-pip-version-check "$WHEEL[dev]" >"$WORK/pip.log" 2>&1; then
    cat "$WORK/pip.log" >&2
    exit 1
fi
(
    cd "$WORK"
    env -u PYTHONPATH "$VENV_PYTHON" -I -c '
import sys, sysconfig
from pathlib import Path
import fastapi_tasks, fastapi_tasks_testing
site = Path(sysconfig.get_paths()["purelib"]).resolve()
for module in (fastapi_tasks, fastapi_tasks_testing):
    path = Path(module.__file__).resolve()
    assert path.is_relative_to(site), f"{module.__name__} is imported from {path}, not from {site}"
    print(f"{module.__name__} from {path}")
'
)

echo "--- the example app's suite and the toolkit's plugin and recorder tests, against the wheel"
SUITE="$WORK/suite"
"$PYTHON" - "$ROOT" "$SUITE" <<'PY'
import json
import shutil
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

root, suite = Path(sys.argv[1]), Path(sys.argv[2])
ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
shutil.copytree(root / "examples", suite / "examples", ignore=ignore)
(suite / "tests").mkdir()
for name in ("conftest.py", "test_plugin.py", "test_recorder.py"):
    shutil.copy2(root / "tests" / name, suite / "tests" / name)

# The project's own pytest settings (strictness, warnings filter, pytester), except that the
# plugin comes through its pytest11 entry point: no `-p no:fastapi_tasks`, and no root conftest
# loading it from the checkout.
options = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
options.pop("testpaths", None)
addopts = options.get("addopts", [])
while "no:fastapi_tasks" in addopts:
    index = addopts.index("no:fastapi_tasks")
    del addopts[index - 1 : index + 1]
lines = ["[tool.pytest.ini_options]"]
for key, value in options.items():
    lines.append(f"{key} = {json.dumps(value)}")
(suite / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

(suite / "conftest.py").write_text(
    '''"""Written by scripts/check_wheel.sh: fail the run unless it tests the installed wheel."""

import os
import sys
import sysconfig
from pathlib import Path

import pytest

import fastapi_tasks
import fastapi_tasks_testing
import fastapi_tasks_testing._entry_point
import fastapi_tasks_testing.plugin

SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
CHECKOUT = Path(os.environ["FASTAPI_TASKS_CHECKOUT"]).resolve()


def pytest_configure(config: pytest.Config) -> None:
    # As the project's root conftest.py does: Starlette 1.x's nudge from httpx to httpx2 is expected.
    try:
        from starlette.exceptions import StarletteDeprecationWarning  # noqa: F401
    except ImportError:
        pass
    else:
        config.addinivalue_line(
            "filterwarnings",
            "ignore:Using `httpx` with `starlette.testclient` is deprecated"
            ":starlette.exceptions.StarletteDeprecationWarning",
        )
    for module in (fastapi_tasks, fastapi_tasks_testing, fastapi_tasks_testing.plugin):
        path = Path(module.__file__).resolve()
        if not path.is_relative_to(SITE):
            raise pytest.UsageError(f"{module.__name__} is imported from {path}, not from {SITE}")
    # The entry point names _entry_point.py, which loads the plugin module under its own name.
    plugins = config.pluginmanager
    if plugins.get_plugin("fastapi_tasks") is not fastapi_tasks_testing._entry_point or (
        plugins.get_plugin("fastapi_tasks_testing.plugin") is not fastapi_tasks_testing.plugin
    ):
        raise pytest.UsageError("the plugin was not loaded through its pytest11 entry point")
    inside = [entry for entry in sys.path if entry and Path(entry).resolve().is_relative_to(CHECKOUT)]
    if inside:
        raise pytest.UsageError(f"sys.path reaches into the checkout: {inside}")
''',
    encoding="utf-8",
)
PY
(
    cd "$SUITE"
    env -u PYTHONPATH -u PYTEST_ADDOPTS -u PYTEST_PLUGINS FASTAPI_TASKS_CHECKOUT="$ROOT" \
        "$VENV_PYTHON" -m pytest --rootdir "$SUITE" -c "$SUITE/pyproject.toml" -p no:cacheprovider -q \
        examples tests
)
echo "--- the wheel passed"
