"""Safe YAML loading that remembers the line of every mapping key and sequence item.

Pydantic reports errors by field path; this map turns a path into a line number so that a
message can point at the exact place in the user's file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import SpecError


def _construct(node, path, lines, loader):
    lines.setdefault(path, node.start_mark.line + 1)   # a key's own line wins over its value's
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise SpecError("mapping keys must be plain scalars",
                                line=key_node.start_mark.line + 1)
            if key in out:
                raise SpecError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml(file: str | Path, text: str | None = None):
    """Return (data, lines) where lines maps a field path tuple to its 1-based line."""
    file = Path(file)
    if text is None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read file: {exc.strerror}", file=file) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple, int] = {}
        data = _construct(node, (), lines, loader) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    except SpecError as exc:
        exc.file = str(file)
        raise SpecError(exc.message, file=file, line=exc.line) from None
    finally:
        loader.dispose()
    return data, lines


def line_for(lines: dict, path) -> int | None:
    """The line of the deepest known prefix of path."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
