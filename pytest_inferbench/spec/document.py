"""A spec or job file as parsed: its data, the line of every field, and SpecErrors that point
into it (file, line, field), pydantic's errors included."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..core.errors import SpecError, did_you_mean, format_field_path
from .families import FAMILIES
from .yaml_lines import line_for, load_yaml


class Document:
    """A parsed YAML file with its line map; raises SpecErrors that point into it."""

    def __init__(self, path: Path):
        self.path = path
        self.data, self.lines = load_yaml(path)

    def error(self, message, field_path=()):
        return SpecError(message, file=self.path, line=line_for(self.lines, field_path),
                         field=format_field_path(field_path) or None)

    def validate(self, model_cls, value, field_path):
        try:
            return model_cls.model_validate(value)
        except ValidationError as exc:
            raise self._from_pydantic(exc, model_cls, field_path) from None

    def _from_pydantic(self, exc: ValidationError, model_cls, field_path):
        err = exc.errors()[0]
        loc = _strip_union_tags(err["loc"])
        full = tuple(field_path) + loc
        if err["type"] == "extra_forbidden":
            key = loc[-1] if loc else "?"
            allowed = _allowed_keys(model_cls, err, loc)
            msg = f"unknown key '{key}'{did_you_mean(key, allowed)}"
            if allowed:
                msg += f"; expected one of: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "this field is required"
        elif err["type"] in ("literal_error", "union_tag_invalid"):
            msg = err["msg"].replace("Input should be", "expected")
            bad = err.get("input")
            if isinstance(bad, dict):
                bad = bad.get("family")
            expected = re.findall(r"'([^']+)'", msg)
            msg = f"got '{bad}', {msg}{did_you_mean(bad, expected)}"
        else:
            msg = err["msg"].replace("Value error, ", "")
            if ("input" in err and not isinstance(err["input"], (dict, list))
                    and repr(err["input"]) not in msg):
                msg += f" (got {err['input']!r})"
        return self.error(msg, full)


def _strip_union_tags(loc):
    """Drop pydantic's union-member tags (e.g. 'resnet', 'function-before[...]') from a loc."""
    out = []
    for part in loc:
        if isinstance(part, str) and (part in FAMILIES or "[" in part):
            continue
        out.append(part)
    return tuple(out)


def _allowed_keys(model_cls, err, loc):
    target = model_cls
    if model_cls is dict or not hasattr(model_cls, "model_fields"):
        return []
    # Walk nested models to find the class that rejected the key.
    for part in loc[:-1]:
        field = target.model_fields.get(part) if hasattr(target, "model_fields") else None
        if field is None:
            break
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            target = ann
    return [k for k in target.model_fields if k not in ("kind",)]


def check_keys(doc: Document, mapping, allowed, path, what):
    if not isinstance(mapping, dict):
        raise doc.error(f"expected a mapping ({what})", path)
    for key in mapping:
        if key not in allowed:
            raise doc.error(f"unknown key '{key}'{did_you_mean(key, allowed)}; expected one of: "
                            f"{', '.join(allowed)}", path + (key,))


def check_name(doc: Document, name, path):
    if isinstance(name, (dict, list)):
        raise doc.error("expected a name (text), not a " +
                        ("mapping" if isinstance(name, dict) else "list"), path)
    return name
