"""Run files of other versions, brought to this one before the typed models read them.

Version 1 (every file written before the Result became typed) had open sections: any key a
writer set was stored. Version 2 declares every key (core/sections.py) and rejects others.
`upgrade_v1` is the one step between them: the shapes are the same, so it keeps every key
version 2 declares and moves the rest, by dotted path, into the result's `unknown_fields`
(kept for whoever needs them; nothing here reads them). A file from a NEWER version is read the
same way, so that a newer writer's additions never stop an older reader.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from ..core.result import Result

VERSION = 2
FORMAT = "pytest-inferbench-run"
# top-level keys of a run file besides the results (the RunFile model in runfile.py)
RUN_KEYS = ("format", "version", "name", "provenance", "results", "partial", "repeats",
            "comparison", "baseline", "followers", "store_run", "noise", "unknown_fields")


def upgrade(doc: dict) -> dict:
    """A run document of any version as a version-2 document (a new dict)."""
    version = doc.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"run file version {version!r}: not a version this package wrote")
    if version == 1:
        return upgrade_v1(doc)
    if version == VERSION:
        return doc
    return {**_set_aside_top(doc), "version": VERSION,
            "results": [set_aside(r) for r in doc.get("results", [])]}


def upgrade_result(result: dict, version: int = 1) -> dict:
    """One result's dict of run-file version `version` as a version-2 dict. Version 1's step
    is lossless on a version-2 result, so a result of unknown version is read as version 1."""
    if version == VERSION:
        return result
    if version == 1:
        kept = set_aside(_v1_rates(result))
        _set_aside_unreadable(kept)
        return kept
    return set_aside(result)


def upgrade_v1(doc: dict) -> dict:
    """Version 1 -> 2: the same shapes, except that a search's `max_rate`/`knee_rate` was once
    a bracket ({value|rate|lower, ...}) and is now its number. Keys version 2 does not declare,
    and values it cannot read (a shape some writer used once), are set aside, per result in
    `unknown_fields` and at the top level in the run's `unknown_fields`."""
    results = [upgrade_result(r, 1) if isinstance(r, dict) else r
               for r in doc.get("results", [])]
    return {**_set_aside_top(doc), "version": VERSION, "results": results}


def _v1_rates(result: dict) -> dict:
    load = result.get("load")
    if not isinstance(load, dict):
        return result
    load, unknown = dict(load), dict(result.get("unknown_fields") or {})
    for key in ("max_rate", "knee_rate"):
        value = load.get(key)
        if isinstance(value, dict):
            unknown[f"load.{key}"] = value
            load[key] = next((value[k] for k in ("value", "rate", "lower")
                              if value.get(k) is not None), None)
    return {**result, "load": load, **({"unknown_fields": unknown} if unknown else {})}


def _set_aside_unreadable(result: dict) -> None:
    """Move each value the Result model rejects into `unknown_fields` (by its path), until it
    reads: a version-1 file always opens, and what it held is still there."""
    for _ in range(50):         # each round removes at least one value
        try:
            Result.model_validate(result)
            return
        except ValidationError as exc:
            moved = [_move(result, err["loc"]) for err in exc.errors()]
        if not any(moved):
            return              # nothing left to move: the caller reports the error
        unknown = result.setdefault("unknown_fields", {})
        unknown.update(dict(m for m in moved if m))


def _move(data: dict, loc: tuple) -> tuple[str, Any] | None:
    """Pop the deepest existing key along a validation error's path; (path, value)."""
    parents, node, path = [], data, []
    for key in loc:
        if isinstance(node, dict) and key in node:
            parents.append((node, key))
            node = node[key]
            path.append(str(key))
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            parents.append((node, key))
            node = node[key]
            path.append(str(key))
        else:
            break
    while parents and isinstance(parents[-1][0], list):
        parents.pop()           # a list item is set aside with its list
        path.pop()
    if not parents or path == ["unknown_fields"]:
        return None
    container, key = parents[-1]
    return ".".join(path), container.pop(key)


def _set_aside_top(doc: dict) -> dict:
    out = {k: v for k, v in doc.items() if k in RUN_KEYS}
    unknown = {k: v for k, v in doc.items() if k not in RUN_KEYS}
    if unknown:
        out["unknown_fields"] = {**(doc.get("unknown_fields") or {}), **unknown}
    return out


def set_aside(result: dict) -> dict:
    """A result's dict with every key Result does not declare moved to `unknown_fields`."""
    if not isinstance(result, dict):
        return result
    unknown: dict[str, Any] = dict(result.get("unknown_fields") or {})
    kept = _strip(result, Result, "", unknown)
    if unknown:
        kept["unknown_fields"] = unknown
    return kept


def _strip(data: dict, model: type[BaseModel], path: str, unknown: dict) -> dict:
    out = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown[path + key] = value
            continue
        out[key] = _strip_value(value, field.annotation, f"{path}{key}.", unknown)
    return out


def _strip_value(value, annotation, path: str, unknown: dict):
    """Follow the annotation into nested models, dicts of models and lists of models."""
    if isinstance(value, dict):
        model = _model_in(annotation)
        if model is not None:
            return _strip(value, model, path, unknown)
        inner = _container_item(annotation, dict)
        if inner is not None and _model_in(inner) is not None:
            return {k: _strip_value(v, inner, f"{path}{k}.", unknown) for k, v in value.items()}
    if isinstance(value, list):
        inner = _container_item(annotation, list)
        if inner is not None and _model_in(inner) is not None:
            return [_strip_value(v, inner, f"{path}{i}.", unknown) for i, v in enumerate(value)]
    return value


def _options(annotation) -> tuple:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _model_in(annotation) -> type[BaseModel] | None:
    for option in _options(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _container_item(annotation, kind):
    """The item annotation of a dict[str, X] or list[X] among the annotation's options."""
    for option in _options(annotation):
        if typing.get_origin(option) is kind:
            args = typing.get_args(option)
            return args[-1] if args else None
    return None
