"""Checks of a settings dataclass's fields: each value against its annotation and its range.

`ulsad.config.ULSADConfig` (the network) and `ulsad.recipe.TrainingRecipe` (how it is trained)
share these, so both reject bad values with the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from ulsad.errors import ULSADError

__all__ = ["Range", "check_fields"]

Range = tuple[float | None, float | None, bool, bool]
"""(low, high, low inclusive, high inclusive); None: unbounded."""


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether `value` fits the annotation `hint` (int, float, bool, str, tuples, unions, Any)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON writes 4.0 as 4: ints are floats too
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        if len(value) != len(args):
            return False
        return all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
    if origin in (list, dict):
        return isinstance(value, origin)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this check does not know: accept


def _is_tuple_hint(hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_tuple_hint(arg) for arg in typing.get_args(hint))
    return typing.get_origin(hint) is tuple


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint)


def check_fields(
    settings: Any,
    ranges: dict[str, Range],
    lengths: dict[str, int] | None = None,
    increasing: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Check every field of the dataclass `settings` against its annotation (lists from JSON
    become tuples), then against `ranges` (applied to every element of a tuple), `lengths` (fixed
    tuple lengths not given by the annotation) and `increasing` (tuples whose values increase)."""
    lengths = lengths or {}
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, hint = getattr(settings, f.name), hints.get(f.name, Any)
        if isinstance(value, list) and _is_tuple_hint(hint):
            value = tuple(value)
            setattr(settings, f.name, value)
        if not _type_ok(value, hint):
            raise ULSADError(
                f"Config field {f.name} must be of type {_type_name(hint)}, got {value!r}."
            )
        values = value if isinstance(value, tuple) else (value,)
        if f.name in lengths and len(values) != lengths[f.name]:
            raise ULSADError(
                f"Config field {f.name} must have {lengths[f.name]} values, got {value!r}."
            )
        if isinstance(value, str) and not value.strip():
            raise ULSADError(f"Config field {f.name} must not be empty.")
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ULSADError(f"Config field {f.name} must be finite, got {value!r}.")
        if f.name not in ranges:
            continue
        low, high, low_in, high_in = ranges[f.name]
        for v in values:
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            below = low is not None and (v < low if low_in else v <= low)
            above = high is not None and (v > high if high_in else v >= high)
            if below or above:
                lo = "-inf" if low is None else low
                hi = "inf" if high is None else high
                span = f"{'[' if low_in else '('}{lo}, {hi}{']' if high_in else ')'}"
                raise ULSADError(f"Config field {f.name} must be in {span}, got {value!r}.")
        if f.name in increasing and list(values) != sorted(set(values)):
            raise ULSADError(f"Config field {f.name} must be increasing, got {value!r}.")
