"""changes(before, after): the `audit.changes` map of what an update changed, unchanged fields left out."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from .model import Change, to_any_value

_MISSING = object()


def _as_mapping(value: Any, name: str) -> Mapping[str, Any]:
    """Read dicts, dataclasses, pydantic models (v1 and v2) and plain objects as field -> value."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and hasattr(type(value), "model_fields"):
        return model_dump()
    if hasattr(value, "__dict__"):
        return {key: item for key, item in vars(value).items() if not key.startswith("_")}
    raise TypeError(f"{name}: cannot read fields of {type(value).__name__}")


def changes(before: Any, after: Any, fields: Iterable[str] | None = None) -> dict[str, Change]:
    """Old and new values of every field that differs between `before` and `after` (None = absent).

    `fields` limits the comparison (and is how to keep secrets out: list only what may be audited).
    Values are reduced to OTel AnyValue, so the result can be passed straight to emit(changes=...).
    """
    old_fields = _as_mapping(before, "before")
    new_fields = _as_mapping(after, "after")
    names = list(fields) if fields is not None else list(dict.fromkeys([*old_fields, *new_fields]))
    result: dict[str, Change] = {}
    for name in names:
        old = old_fields.get(name, _MISSING)
        new = new_fields.get(name, _MISSING)
        if old == new:
            continue
        result[name] = Change(
            None if old is _MISSING else to_any_value(old, f"changes.{name}.old"),
            None if new is _MISSING else to_any_value(new, f"changes.{name}.new"),
        )
    return result
