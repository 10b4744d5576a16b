"""Build dataclasses from plain dicts (YAML), checking every field and reporting every error at once.

Used for the experiment config and for every plug-in's parameters, so a plug-in is just a dataclass:
fields with types, defaults and ``metadata={"help": ...}``, plus checks in ``__post_init__`` that call
:func:`check`. Written by hand because no small, well-kept library does typed dict->dataclass
validation with "did you mean" suggestions and all-errors-at-once reporting without pulling in a
large dependency (pydantic would double the install's compile surface for this one job).
"""
from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any, Literal, Union

from .errors import ConfigError, did_you_mean


def help_of(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    return ""


def check(errors: list[str], ok: bool, message: str) -> None:
    """Append ``message`` to ``errors`` when ``ok`` is false (for ``__post_init__`` checks)."""
    if not ok:
        errors.append(message)


def finish(errors: list[str]) -> None:
    """End of a ``__post_init__``: raise every collected message at once."""
    if errors:
        raise ConfigError(errors)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is list:
        (arg,) = typing.get_args(hint) or (Any,)
        return f"list of {_type_name(arg)}"
    if origin is dict:
        return "mapping"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, where: str, errors: list[str]) -> Any:
    """Return ``value`` checked (and, for float fields, converted) against ``hint``."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            errors.append(
                f"{where}: got {value!r}, allowed: {', '.join(map(str, allowed))}."
                + (did_you_mean(str(value), map(str, allowed)).split(" Available")[0])
            )
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            trial: list[str] = []
            out = _coerce(value, arg, where, trial)
            if not trial:
                return out
        errors.append(f"{where}: expected {_type_name(hint)}, got {value!r}")
        return value
    if hint is type(None):
        if value is not None:
            errors.append(f"{where}: expected null, got {value!r}")
        return value
    if origin is list or hint is list:
        if not isinstance(value, (list, tuple)):
            errors.append(f"{where}: expected {_type_name(hint)}, got {value!r}")
            return value
        args = typing.get_args(hint)
        return [_coerce(v, args[0], f"{where}[{i}]", errors) if args else v for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, errors)
    if hint is bool:
        if not isinstance(value, bool):
            errors.append(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "1e-5" (no dot) as a string; accept numeric strings for floats.
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    return float(value)
            errors.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type, data: Any, where: str, errors: list[str] | None = None, also: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from mapping ``data``; problems go to ``errors`` (or raise if None).
    ``also``: keys valid beside the fields (a regularizer's ``weight``), offered in suggestions."""
    own = errors is None
    errors = [] if errors is None else errors
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{where}: expected a mapping of fields, got {data!r}")
        if own:
            raise ConfigError(errors)
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    before = len(errors)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            hint = did_you_mean(str(key), [*fields, *also], synonyms=getattr(cls, "SYNONYMS", None))
            errors.append(f"{where}.{key}: unknown field.{hint}")
            continue
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}", errors)
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(f"{where}.{name}: required field is missing ({help_of(cls, name) or _type_name(hints[name])})")
    obj = None
    if len(errors) == before:
        try:
            obj = cls(**kwargs)
        except ConfigError as e:
            errors.extend(f"{where}.{m}" if not m.startswith(where) else m for m in e.messages)
    if own and errors:
        raise ConfigError(errors)
    return obj


def describe(cls: type) -> list[tuple[str, str, str, str]]:
    """(field, type, default, help) rows, for ``guidetune ls``."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows
