"""Keep `__all__` honest and every public name documented."""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
from types import FunctionType, GenericAlias, ModuleType

import pytest

import fastapi_tasks
import fastapi_tasks.errors
import fastapi_tasks.utils

# The modules whose `__all__` the package root re-exports.
SUBMODULES = [
    "fastapi_tasks._phases",
    "fastapi_tasks.batch",
    "fastapi_tasks.config",
    "fastapi_tasks.definition",
    "fastapi_tasks.dependencies",
    "fastapi_tasks.scheduler",
    "fastapi_tasks.task",
    "fastapi_tasks.tasks",
]


def public_names(module: ModuleType) -> set[str]:
    """The names a user can see: not private, not `from __future__` features, not incidental submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith(("_", "@"))  # "@py_builtins": pytest's assertion rewriting, in an installed wheel
        and name != "annotations"
        and not (isinstance(value, ModuleType) and value.__name__.startswith(f"{module.__name__}."))
    } | {name for name in module.__all__ if isinstance(getattr(module, name), ModuleType)}


def attribute_docstrings(module: ModuleType) -> dict[str, str]:
    """The docstrings written under module-level assignments (`Tasks = ...` then `\"\"\"...\"\"\"`)."""
    body = ast.parse(inspect.getsource(module)).body
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.Assign | ast.AnnAssign)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            docs.update({target.id: following.value.value for target in targets if isinstance(target, ast.Name)})
    return docs


def own_docstring(module: ModuleType, name: str) -> str | None:
    value = getattr(module, name)
    # `not GenericAlias`: on Python 3.10, `inspect.isclass(Callable[..., Any])` is true (fixed in 3.11),
    # and the alias's `__doc__` is None; its docstring is the one written under it, found below.
    if (
        isinstance(value, ModuleType)
        or (inspect.isclass(value) and not isinstance(value, GenericAlias))
        or inspect.isfunction(value)
    ):
        return value.__doc__
    # A type alias or other value: look for its docstring where it is defined.
    for defining in [module, *(importlib.import_module(submodule) for submodule in SUBMODULES)]:
        if name in vars(defining) and (doc := attribute_docstrings(defining).get(name)):
            return doc
    return None


@pytest.mark.parametrize("module", [fastapi_tasks, fastapi_tasks.errors], ids=lambda module: module.__name__)
def test_all_is_sorted_and_lists_exactly_the_public_names(module: ModuleType) -> None:
    assert module.__all__ == sorted(set(module.__all__))
    assert set(module.__all__) == public_names(module)


def test_the_root_reexports_every_public_name_of_its_modules() -> None:
    for name in SUBMODULES:
        submodule = importlib.import_module(name)
        for public in submodule.__all__:
            assert public in fastapi_tasks.__all__, f"{name}.{public} is not exported from fastapi_tasks"
            assert getattr(fastapi_tasks, public) is getattr(submodule, public)


def test_the_root_reexports_the_errors_that_0_1_0s_documentation_imports_from_it() -> None:
    reexported = {name for name in fastapi_tasks.__all__ if name in fastapi_tasks.errors.__all__}
    assert reexported == {"FastAPITasksError", "FastAPITasksUninitializedAppError"}
    for name in reexported:
        assert getattr(fastapi_tasks, name) is getattr(fastapi_tasks.errors, name)


def test_the_utils_module_keeps_0_1_0s_always_async_call_and_nothing_else() -> None:
    assert fastapi_tasks.utils.__all__ == ["always_async_call"]
    assert "utils" not in fastapi_tasks.__all__  # kept for old code, not part of the API to learn


def test_the_errors_module_exports_the_whole_exception_tree() -> None:
    defined = {
        name
        for name, value in vars(fastapi_tasks.errors).items()
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == "fastapi_tasks.errors"
    }
    assert set(fastapi_tasks.errors.__all__) == defined
    for name in defined - {"FastAPITasksError"}:
        assert issubclass(getattr(fastapi_tasks.errors, name), fastapi_tasks.errors.FastAPITasksError)
    # The tree drawn in the module docstring names every error.
    assert fastapi_tasks.errors.__doc__ is not None
    assert all(name in fastapi_tasks.errors.__doc__ for name in defined)


@pytest.mark.parametrize(
    ("module", "name"),
    [(fastapi_tasks, name) for name in fastapi_tasks.__all__]
    + [(fastapi_tasks.errors, name) for name in fastapi_tasks.errors.__all__]
    + [(fastapi_tasks.utils, name) for name in fastapi_tasks.utils.__all__],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_every_public_name_has_a_docstring(module: ModuleType, name: str) -> None:
    doc = own_docstring(module, name)
    assert doc, f"{module.__name__}.{name} has no docstring"
    assert doc.strip().splitlines()[0].strip(), f"{module.__name__}.{name} has no summary line"


@pytest.mark.parametrize(
    "cls", [value for value in map(fastapi_tasks.__dict__.get, fastapi_tasks.__all__) if inspect.isclass(value)]
)
def test_every_public_method_and_property_has_a_docstring(cls: type) -> None:
    undocumented = [
        name
        for klass in cls.__mro__
        if klass.__module__.startswith("fastapi_tasks")
        for name, member in vars(klass).items()
        if not name.startswith("_")
        and isinstance(member, property | staticmethod | classmethod | FunctionType)
        and not member.__doc__
    ]
    assert undocumented == []
