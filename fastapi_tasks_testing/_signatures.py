"""Signatures of the functions tasks run: found once (cached), and written as a message shows them.

The assertions bind arguments to a function's signature (as `unittest.mock.create_autospec` does);
finding a signature is slow enough to matter in a long test, so it is cached for the functions
and bound methods that compare by identity.
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable
from typing import Any, TypeAlias

__all__ = ["callable_signature", "plain_signature"]

# A function's signature, and what it was computed from: `__code__`, `__defaults__` and `__kwdefaults__`
# of the function (of a method's function), so that a function changed in place is looked at again.
_SignatureEntry: TypeAlias = "tuple[inspect.Signature | None, object, object, object]"
# Keyed weakly by the function, so that the cache keeps no function (nor a method's object) alive after
# its test. Only plain functions and the methods bound to them: they compare and hash by identity (a
# method by its function and the identity of its object), so an equal key always has the same signature.
_SIGNATURES: weakref.WeakKeyDictionary[Callable[..., Any], _SignatureEntry] = weakref.WeakKeyDictionary()
_CACHED_TYPES = (types.FunctionType, types.MethodType)


def callable_signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """`inspect.signature(func)`, or `None` when it has none; cached for functions and bound methods."""
    if type(func) not in _CACHED_TYPES:
        return _uncached_signature(func)
    function = func.__func__ if type(func) is types.MethodType else func
    code = getattr(function, "__code__", None)
    defaults = getattr(function, "__defaults__", None)
    kwdefaults = getattr(function, "__kwdefaults__", None)
    entry = _SIGNATURES.get(func)
    if entry is not None and entry[1] is code and entry[2] is defaults and entry[3] is kwdefaults:
        return entry[0]
    signature = _uncached_signature(func)
    _SIGNATURES[func] = (signature, code, defaults, kwdefaults)
    return signature


def _uncached_signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def plain_signature(signature: inspect.Signature) -> str:
    """`(a, b=1, *, c)`: a signature without its annotations, as a message shows it."""
    return str(
        signature.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
    )
