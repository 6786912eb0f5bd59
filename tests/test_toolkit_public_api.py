"""The public API of `fastapi_tasks_testing`: honest `__all__`, documented names, no pytest import."""

from __future__ import annotations
import __future__

import ast
import importlib
import importlib.metadata
import inspect
import itertools
import pkgutil
import subprocess
import sys
import typing
from types import ModuleType

import pytest

import fastapi_tasks_testing
import fastapi_tasks_testing.plugin


def public_names(module: ModuleType) -> set[str]:
    """The names a module really offers: not private, not submodules, not its own typing imports."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, ModuleType):
            continue
        if getattr(typing, name, None) is value or getattr(__future__, name, None) is value:
            continue  # `from typing import Any`, `from __future__ import annotations`
        names.add(name)
    return names


def attribute_docstrings() -> dict[str, str]:
    """`NAME = value` followed by a string literal, in every module of the package: the data's docstring."""
    docs: dict[str, str] = {}
    modules = [fastapi_tasks_testing.__name__] + [
        f"{fastapi_tasks_testing.__name__}.{info.name}" for info in pkgutil.iter_modules(fastapi_tasks_testing.__path__)
    ]
    for module_name in modules:
        source = inspect.getsource(importlib.import_module(module_name))
        body = ast.parse(source).body
        for statement, following in itertools.pairwise(body):
            target: ast.expr | None = None
            if isinstance(statement, ast.AnnAssign):
                target = statement.target
            elif isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
            if (
                isinstance(target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[target.id] = following.value.value
    return docs


def test_all_is_the_set_of_public_names() -> None:
    assert sorted(fastapi_tasks_testing.__all__) == sorted(public_names(fastapi_tasks_testing))
    assert len(set(fastapi_tasks_testing.__all__)) == len(fastapi_tasks_testing.__all__)


def test_plugin_all_is_the_set_of_its_public_names() -> None:
    plugin = fastapi_tasks_testing.plugin
    own = {
        name for name in public_names(plugin) if getattr(getattr(plugin, name), "__module__", None) == plugin.__name__
    }
    assert sorted(plugin.__all__) == sorted(own)


def test_the_core_toolkit_is_public() -> None:
    for name in (
        "RecordingScheduler",
        "TaskRecord",
        "RequestInfo",
        "RequestRecords",
        "Phase",
        "TaskStatus",
        "assert_scheduled",
        "assert_scheduled_once",
        "assert_not_scheduled",
        "assert_order",
        "render_timeline",
    ):
        assert name in fastapi_tasks_testing.__all__


@pytest.mark.parametrize("name", sorted(fastapi_tasks_testing.__all__))
def test_every_public_name_has_a_docstring(name: str) -> None:
    value = getattr(fastapi_tasks_testing, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        # A class's own docstring, not one inherited through __doc__ lookups.
        doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
        assert doc, f"{name} has no docstring"
        assert doc.strip().splitlines()[0], f"{name}'s docstring has no summary line"
    else:
        assert attribute_docstrings().get(name), f"{name} has no docstring (a string literal right after it)"


@pytest.mark.parametrize(
    "cls",
    [
        value
        for name in sorted(fastapi_tasks_testing.__all__)
        if inspect.isclass(value := getattr(fastapi_tasks_testing, name))
        and value.__module__.startswith(fastapi_tasks_testing.__name__)
    ],
    ids=lambda cls: cls.__name__,
)
def test_every_public_method_has_a_docstring(cls: type) -> None:
    # The class's own methods and those of the parts it is composed of (mixins of the toolkit's own).
    parts = [klass for klass in cls.__mro__ if klass.__module__.startswith("fastapi_tasks_testing")]
    undocumented = [
        f"{klass.__name__}.{name}"
        for klass in parts
        for name, member in vars(klass).items()
        if not name.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not (member.__doc__ or "").strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize("name", fastapi_tasks_testing.plugin.__all__)
def test_plugin_hooks_and_fixture_have_docstrings(name: str) -> None:
    value = getattr(fastapi_tasks_testing.plugin, name)
    assert inspect.getdoc(getattr(value, "__wrapped__", value))


def test_importing_the_toolkit_does_not_import_pytest() -> None:
    code = (
        "import sys\n"
        "import fastapi_tasks_testing\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest', 'pluggy')"
        " or m == 'fastapi_tasks_testing.plugin'))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert completed.stdout == "[]\n"


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    (entry_point,) = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == "fastapi_tasks"]
    # A module of its own that loads the plugin, so that the plugin module can be named too (-p, pytest_plugins).
    assert entry_point.value == "fastapi_tasks_testing._entry_point"
    assert entry_point.load().pytest_plugins == ["fastapi_tasks_testing.plugin"]
