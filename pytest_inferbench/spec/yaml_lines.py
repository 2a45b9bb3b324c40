"""Safe YAML loading that remembers the line of every mapping key and sequence item.

Pydantic reports errors by field path; this map turns a path into a line number so that a
message can point at the exact place in the user's file.

Any bytes give either data or a SpecError with the file and, where there is one, the line:
files that are too big, not UTF-8 or binary, nested too deeply, or that expand past a sane
size through aliases ("billion laughs") are refused with a message rather than a traceback.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ..core.errors import SpecError

MAX_BYTES = 4 * 2**20     # a spec is a few KB; a file this big is not one
MAX_DEPTH = 64            # the schema nests about 6 levels deep
MAX_VALUES = 100_000      # values after expanding aliases

_TAG = "tag:yaml.org,2002:"
_CORE_SCALARS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_MERGE = _TAG + "merge"


def _line(node) -> int:
    return node.start_mark.line + 1


def _short_tag(tag: str) -> str:
    return tag.replace(_TAG, "!!")


def _text(node) -> str:
    """A scalar's text; YAML's "\\ud83d" escapes give lone surrogates, which are not text."""
    try:
        node.value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(node.value[exc.start])
        raise SpecError(f"the escape \\u{code:04x} is half of a UTF-16 surrogate pair, not a "
                        f"character; write the character itself (or \\U and 8 hex digits)",
                        line=_line(node)) from None
    return node.value


def _too_deep() -> str:
    return f"nesting deeper than {MAX_DEPTH} levels; a spec is a few levels deep"


class _Loader(yaml.SafeLoader):
    """PyYAML's composer recurses once per nesting level: stop it at MAX_DEPTH, with a line,
    long before Python's recursion limit."""
    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise SpecError(_too_deep(), line=self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Builder:
    """Turns a composed node graph into dicts, lists and scalars, recording each path's line.

    Aliases share nodes, so a node may be built many times: the count of built values is capped.
    """

    def __init__(self, loader: _Loader):
        self.loader = loader
        self.lines: dict[tuple, int] = {}
        self.count = 0

    def _tick(self, node, depth):
        self.count += 1
        if self.count > MAX_VALUES:
            raise SpecError(f"the document expands to more than {MAX_VALUES} values "
                            f"(YAML aliases?)", line=_line(node))
        if depth > MAX_DEPTH:   # reachable only through an alias inside its own anchor
            raise SpecError(_too_deep() + " (an alias inside its own anchor?)", line=_line(node))

    def build(self, node, path=(), depth=0):
        self._tick(node, depth)
        self.lines.setdefault(path, _line(node))   # a key's own line wins over its value's
        if isinstance(node, MappingNode):
            self._check_tag(node, _TAG + "map")
            out = {}
            for key, (key_node, value_node) in self._pairs(node, depth).items():
                self.lines[path + (key,)] = _line(key_node)
                out[key] = self.build(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, SequenceNode):
            self._check_tag(node, _TAG + "seq")
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _pairs(self, node, depth) -> dict:
        """key -> (key_node, value_node) in file order, with YAML merge keys (`<<: *anchor` or
        `<<: [*a, *b]`) applied: the mapping's own keys win, then earlier merged mappings."""
        pairs, own = {}, {}
        for key_node, value_node in node.value:
            self._tick(key_node, depth)
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise SpecError("a merge key '<<' takes a mapping or a list of mappings, "
                                        "e.g. <<: *defaults", line=_line(source))
                    for key, pair in self._pairs(source, depth + 1).items():
                        pairs.setdefault(key, pair)
                continue
            key = self._key(key_node)
            if key in own:
                raise SpecError(f"duplicate key '{key}' (first at line {own[key]})",
                                line=_line(key_node))
            own[key] = _line(key_node)
            pairs[key] = (key_node, value_node)
        return pairs

    @staticmethod
    def _key(node) -> str:
        if not isinstance(node, ScalarNode):
            raise SpecError("mapping keys must be plain scalars", line=_line(node))
        # Every key in the schema is a name, so keep the text as written: YAML 1.1 would read
        # `on:` and `off:` (workload fields) as booleans, `1:` as an int and `~:` as None.
        return _text(node)

    def _scalar(self, node):
        _text(node)
        plain = node.style is None
        implicit = self.loader.resolve(ScalarNode, node.value, (plain, not plain))
        if node.tag != implicit and node.tag != _TAG + "str":
            raise SpecError(f"YAML tags such as '{_short_tag(node.tag)}' are not supported here; "
                            f"write the plain value", line=_line(node))
        if node.tag not in _CORE_SCALARS:
            return node.value   # a date, or '<<' / '=' as a value: no field wants those types
        try:
            return self.loader.construct_object(node)
        except ValueError:
            return node.value   # YAML 1.1 resolves '0x_' and '._' as numbers it cannot build

    def _check_tag(self, node, expected):
        if node.tag != expected:
            raise SpecError(f"YAML tags such as '{_short_tag(node.tag)}' are not supported here",
                            line=_line(node))


def _read_text(file: Path) -> str:
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror}", file=file) from None
    if len(data) > MAX_BYTES:
        try:
            size = f"{file.stat().st_size / 2**20:.1f} MiB"
        except OSError:
            size = f"over {MAX_BYTES // 2**20} MiB"
        raise SpecError(f"file is {size}; a spec is expected to be small "
                        f"(limit {MAX_BYTES // 2**20} MiB)", file=file)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SpecError("the file is UTF-16; save it as UTF-8", file=file, line=1)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    nul = data.find(b"\0")
    if nul >= 0:
        line, column = _byte_position(data, nul)
        raise SpecError(f"binary file: NUL byte at line {line}, column {column}; "
                        f"expected YAML text", file=file, line=line)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _byte_position(data, exc.start)
        raise SpecError(f"not valid UTF-8: byte 0x{data[exc.start]:02x} at line {line}, "
                        f"column {column}", file=file, line=line) from None


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, column in characters) of a byte offset."""
    start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[start:offset].decode("utf-8", errors="replace")) + 1
    return data.count(b"\n", 0, offset) + 1, column


def load_yaml(file: str | Path, text: str | None = None):
    """Return (data, lines) where lines maps a field path tuple to its 1-based line."""
    file = Path(file)
    if text is None:
        text = _read_text(file)
    loader = None
    try:
        loader = _Loader(text)   # the reader refuses control characters here already
        builder = _Builder(loader)
        node = loader.get_single_node()
        data = builder.build(node) if node is not None else None
    except yaml.reader.ReaderError as exc:   # a control character; not a MarkedYAMLError
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError(f"control character U+{char:04X} at line {line}, column {column} is "
                        f"not allowed in YAML (a binary file?)", file=file, line=line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    except RecursionError:   # only if the caller's stack was already deep
        raise SpecError(_too_deep(), file=file) from None
    except SpecError as exc:
        raise SpecError(exc.message, file=file, line=exc.line) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, builder.lines


def line_for(lines: dict, path) -> int | None:
    """The line of the deepest known prefix of path."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
