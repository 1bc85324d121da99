"""The one way Podium reads what it did not write: files, and JSON from the command line.

Workflow, agents and alerts files, ``--input-file`` and every ``-i`` value go
through here, so that one set of limits holds everywhere (the README's
"Limits" lists them). Each limit stops a small input from costing a lot:

- only regular files, read with a bound (``/dev/zero`` or a FIFO would never
  end), at most ``PODIUM_MAX_FILE_BYTES`` (64 MiB by default); UTF-8 text
  without NUL bytes or lone surrogates (JSON and SQLite cannot hold those);
- YAML aliases may stand for at most ``MAX_ALIAS_NODES`` nodes in all: a
  500-byte "billion laughs" file is cheap to parse (PyYAML shares the
  aliased objects) but expands to 387 million nodes in whatever walks it
  next, and a recursive alias never ends;
- nesting at most ``MAX_DEPTH`` levels: deeper data overflows recursion
  (json's own parser at ~1,000 levels, orjson's encoder in the store at 254);
- integers within 64 bits and floats that do not overflow: what the store's
  JSON encoder (orjson) takes, so that a run cannot fail on its own input
  after it started (Python itself refuses to parse 4,300 digits or more);
- string keys only, none twice (the last one would win silently), no ``!!binary``,
  ``!!set``, ``!!omap`` or ``!!pairs``: a file holds plain JSON-like data.

Everything is checked while loading, before any model or engine sees the
data, and every refusal names the file, the line where it can and the fix.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from podium.errors import ConfigError, DefinitionError, Problem

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES_ENV",
    "Lines",
    "NotJSON",
    "RefusedValue",
    "format_size",
    "line_of",
    "max_file_bytes",
    "parse_document",
    "parse_json_value",
    "read_text",
]

MAX_DEPTH = 64
MAX_ALIAS_NODES = 100_000
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1  # orjson's range: signed or unsigned 64-bit
DEFAULT_MAX_FILE_BYTES = 64 << 20
MAX_FILE_BYTES_ENV = "PODIUM_MAX_FILE_BYTES"

Lines = dict[tuple[str | int, ...], int]

_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_REFUSED_TAGS = {
    _TAG + "binary": "write the data as text, e.g. base64 in a string",
    _TAG + "set": "write a list, or a mapping with null values without the !!set tag",
    _TAG + "omap": "write a mapping (keys keep their order) or a list of pairs",
    _TAG + "pairs": "write a mapping or a list of [key, value] lists",
}
_NUMBER_TAGS = (_TAG + "int", _TAG + "float")
_KEY_TAGS = (_TAG + "str", _TAG + "merge")
# A JSON or YAML escape that can make a lone surrogate: only then are strings searched.
_SURROGATE_ESCAPE = re.compile(r"\\(?:u|U0000)[dD][89a-fA-F]")
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|mib|gib)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_DEPTH_HINT = f"flatten the data: at most {MAX_DEPTH} levels of lists and mappings"
_NUMBER_HINT = "write it as a string if it is an identifier, or use a smaller number"


class RefusedValue(Exception):
    """A value that breaks one of the limits; ``path`` says where in the data it sits."""

    def __init__(self, message: str, hint: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = path


class NotJSON(ValueError):
    """The text is not JSON (``-i`` then keeps it as a string)."""


def format_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def max_file_bytes() -> int:
    """The largest file Podium reads: ``$PODIUM_MAX_FILE_BYTES`` (bytes, or 500KiB, 1GiB)."""
    raw = os.environ.get(MAX_FILE_BYTES_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_FILE_BYTES
    match = _SIZE.match(raw)
    value = int(match.group(1)) * _UNITS[(match.group(2) or "").lower()] if match else 0
    if value < 1:
        raise ConfigError(
            f"{MAX_FILE_BYTES_ENV}={raw[:40]!r} is not a size (fix: write a number of bytes"
            " or a size such as 64MiB, or unset it)"
        )
    return value


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_text(path: str | Path, *, what: str = "file", option: str | None = None) -> str:
    """The text of a regular file of at most ``max_file_bytes()``; ``DefinitionError`` else.

    Opened without blocking (opening a FIFO for reading waits for a writer)
    and read with a bound, so a device or a FIFO is refused at once instead of
    hanging or filling the memory; ``what`` and ``option`` shape the messages.
    """
    source = str(path)
    where = f" given to {option}" if option else ""
    to = f" to {option}" if option else ""
    limit = max_file_bytes()

    def refuse(message: str, hint: str) -> DefinitionError:
        return DefinitionError([Problem(message, file=source, hint=hint)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise refuse(f"{what} not found", f"check the path{where}") from None
    except OSError as exc:
        raise refuse(f"cannot read the {what}: {exc.strerror or exc}",
                     f"check the path{where} and its permissions") from None
    except ValueError:  # a NUL byte in the path
        raise refuse(f"cannot read the {what}: the path has a NUL byte",
                     f"check the path{where}") from None
    too_big = refuse(f"the {what} is larger than {format_size(limit)}",
                     f"use a smaller file, or raise the limit with {MAX_FILE_BYTES_ENV}"
                     " (e.g. 256MiB)")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "special")
            raise refuse(f"the {what} is not a regular file (it is {kind})",
                         f"give the path of a regular file{to}")
        if info.st_size > limit:
            raise too_big
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while we read it (/proc, a log)
                raise too_big
    except OSError as exc:
        raise refuse(f"cannot read the {what}: {exc.strerror or exc}",
                     f"check the path{where}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    nul = data.find(b"\0")
    if nul >= 0:
        raise refuse(f"the {what} is binary, not text (NUL byte at offset {nul})",
                     "save it as YAML or JSON text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(
            f"the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "save it as UTF-8",
        ) from None


# --- JSON -------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    """A key given twice; YAML knows both lines, JSON's parser neither."""

    def __init__(self, key: str, line: int | None = None, first: int | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.line = line
        self.first = first

    def problem(self, source: str) -> Problem:
        also = f" (also on line {self.first})" if self.first else ""
        return Problem(f"duplicate key {self.key!r}{also}", file=source, line=self.line,
                       hint="give each key once: the last one would win silently")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _too_big(text: str) -> str:
    digits = f" ({len(text):,} characters)" if len(text) > 24 else ""
    return f"the integer {_preview(text)}{digits} does not fit in 64 bits"


def _check_number(value: int | float) -> None:
    """An integer within 64 bits, a float that did not overflow (JSON has no infinity)."""
    if type(value) is int:
        if not INT_MIN <= value <= INT_MAX:
            raise RefusedValue(_too_big(str(value)), _NUMBER_HINT)
    elif math.isinf(value):
        raise RefusedValue("a number too large for a float", _NUMBER_HINT)


def _json_constant(text: str) -> Any:
    raise NotJSON(f"{text} is not JSON")


def _preview(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[:n] + "…"


def _loads(text: str) -> Any:
    """``json.loads`` under the limits; raises NotJSON, RefusedValue or _DuplicateKey.

    Numbers are checked after parsing, not by ``parse_int``/``parse_float``
    hooks: those made a 15 MB input twice as slow to load, and Python's own
    limit (4,300 digits) already stops the costly integers.
    """
    try:
        data = json.loads(text, object_pairs_hook=_unique, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise NotJSON(exc.msg) from exc
    except NotJSON:
        raise
    except ValueError:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise RefusedValue("an integer of more than 4,300 digits does not fit in 64 bits",
                           _NUMBER_HINT) from None
    except RecursionError:  # json's parser recurses; deep data ends here at ~1,000 levels
        raise RefusedValue(f"nested deeper than {MAX_DEPTH} levels", _DEPTH_HINT) from None
    _check_data(data, text)
    return data


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_tree(value: Any, depth: int, strings: bool, numbers: bool) -> None:
    """Depth, numbers and (``strings``) lone surrogates of parsed data.

    The path of a refused value is added on the way out.

    Recursive (at most MAX_DEPTH frames), with no path kept on the way down:
    twice as fast as an explicit stack of paths, on a 15 MB input.
    """
    if depth > MAX_DEPTH:
        raise RefusedValue(f"nested deeper than {MAX_DEPTH} levels", _DEPTH_HINT)
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        kind = type(item)
        try:
            if kind is dict or kind is list:
                _check_tree(item, depth + 1, strings, numbers)
            elif numbers and (kind is int or kind is float):
                _check_number(item)
            elif strings and kind is str and _lone_surrogate(item):
                raise _surrogate()
            if strings and type(key) is str and _lone_surrogate(key):
                raise _surrogate()
        except RefusedValue as exc:
            exc.path = (key, *exc.path)
            raise


def _check_data(data: Any, text: str, *, numbers: bool = True) -> None:
    """Depth and numbers of parsed data, and lone surrogates if ``text`` has escapes for them."""
    strings = _SURROGATE_ESCAPE.search(text) is not None
    if type(data) is dict or type(data) is list:
        _check_tree(data, 1, strings, numbers)
    elif numbers and (type(data) is int or type(data) is float):
        _check_number(data)
    elif strings and isinstance(data, str) and _lone_surrogate(data):
        raise _surrogate()


def _surrogate() -> RefusedValue:
    return RefusedValue("a string holds a lone surrogate (\\ud800-\\udfff), which is not text",
                        "escape whole characters only (a surrogate pair, or the character)")


def parse_json_value(text: str) -> Any:
    """A JSON value from the command line (``-i``) under the file limits.

    Raises ``NotJSON`` when it is not JSON (``-i`` keeps such text as a
    string) and ``RefusedValue`` when it is JSON that breaks a limit.
    """
    try:
        return _loads(text)
    except _DuplicateKey as exc:
        raise RefusedValue(f"duplicate key {exc.key!r}", "give each key once") from None


def _path_text(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path[:8]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out + ("…" if len(path) > 8 else "")


def _json_document(text: str, source: str) -> Any:
    try:
        return _loads(text)
    except NotJSON as exc:
        cause = exc.__cause__
        line = cause.lineno if isinstance(cause, json.JSONDecodeError) else None
        raise DefinitionError(
            [Problem(f"invalid JSON: {exc}{_quote_line(text, line)}", file=source, line=line,
                     hint="check the brackets, commas and quotes around this line")]
        ) from None
    except RefusedValue as exc:
        at = f" (at {_path_text(exc.path)})" if exc.path else ""
        raise DefinitionError(
            [Problem(exc.message + at, file=source, hint=exc.hint)]
        ) from None
    except _DuplicateKey as exc:
        raise DefinitionError([_located(exc, text, source).problem(source)]) from None


def _located(exc: _DuplicateKey, text: str, source: str) -> _DuplicateKey:
    """The same duplicate with its lines: JSON is YAML, and YAML nodes know their lines."""
    try:
        _compose(text, source)
    except _DuplicateKey as located:
        return located
    except Exception:  # noqa: BLE001 - only the line numbers were at stake
        return exc
    return exc


# --- YAML -------------------------------------------------------------------------------


def _quote_line(text: str, line: int | None) -> str:
    """The offending line, quoted (parser messages alone rarely show the value).

    Only spaces are trimmed, so a stray tab stays visible as ``\\t``; a long
    line is cut, so that a one-line hostile file does not flood the terminal.
    """
    if line is None or line < 1:
        return ""
    lines = text.splitlines()
    if line > len(lines) or not lines[line - 1].strip():
        return ""
    quoted = lines[line - 1].strip(" ")
    return f" in {quoted[:80]!r}" + ("…" if len(quoted) > 80 else "")


class _YamlWalk:
    """One pass over the composed YAML nodes, before any Python value is made.

    Counts the nodes that aliases stand for (a shared node visited again is
    an alias), limits the depth, refuses recursive aliases, duplicate or
    non-string keys, tags of non-JSON data and oversized numbers, and records
    the line of each location for the messages of later checks.
    """

    def __init__(self, loader: yaml.SafeLoader, source: str) -> None:
        self.loader = loader
        self.source = source
        self.lines: Lines = {}
        self.visits = 0
        self.seen: set[int] = set()
        self.ancestors: set[int] = set()

    def refuse(self, node: yaml.Node, message: str, hint: str) -> DefinitionError:
        return DefinitionError(
            [Problem(message, file=self.source, line=node.start_mark.line + 1, hint=hint)])

    def walk(self, node: yaml.Node, loc: tuple[str | int, ...], depth: int) -> None:
        self.visits += 1
        key = id(node)
        if key in self.seen:
            if self.visits - len(self.seen) > MAX_ALIAS_NODES:
                raise self.refuse(
                    node, f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes"
                    " (the value anchored on this line is repeated too often)",
                    "repeat less through aliases (*name), or write the data out")
        else:
            self.seen.add(key)
        self.lines[loc] = node.start_mark.line + 1
        if node.tag in _REFUSED_TAGS:
            raise self.refuse(node, f"{node.tag.replace(_TAG, '!!')} values are not allowed:"
                              " a file holds JSON-like data", _REFUSED_TAGS[node.tag])
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _NUMBER_TAGS:
                self.number(node)
            return
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"nested deeper than {MAX_DEPTH} levels", _DEPTH_HINT)
        if key in self.ancestors:
            raise self.refuse(node, "recursive alias: the value anchored on this line"
                              " contains itself", "an alias (*name) cannot sit inside its anchor")
        self.ancestors.add(key)
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, (*loc, i), depth + 1)
        elif isinstance(node, yaml.MappingNode):
            self.mapping(node, loc, depth)
        self.ancestors.discard(key)

    def mapping(self, node: yaml.MappingNode, loc: tuple[str | int, ...], depth: int) -> None:
        first: dict[tuple[str, str], int] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):  # a complex key: still bounded
                self.walk(k, (*loc, "?"), depth + 1)
                self.walk(v, (*loc, "?"), depth + 1)
                continue
            line = k.start_mark.line + 1
            if k.tag not in _KEY_TAGS:
                # JSON keys are strings: `1:` or `on:` (a boolean in YAML 1.1) would
                # pass validation and fail the run when its data is stored.
                raise self.refuse(k, f"the key {k.value!r} is not a string",
                                  f"quote it: '{k.value}'")
            name = (k.tag, k.value)
            if name in first:
                raise _DuplicateKey(k.value, line, first[name])
            first[name] = line
            self.walk(v, (*loc, k.value), depth + 1)
            self.lines[(*loc, k.value)] = line

    def number(self, node: yaml.ScalarNode) -> None:
        # Made now (PyYAML keeps it for the document) to check its size.
        try:
            value = self.loader.construct_object(node)
            if isinstance(value, int):
                _check_number(value)
            elif isinstance(value, float) and math.isinf(value) and "inf" not in node.value.lower():
                _check_number(value)  # 1e999 overflowed; a written .inf is the field's business
        except ValueError:  # int(): more than 4,300 digits
            raise self.refuse(node, _too_big(node.value), _NUMBER_HINT) from None
        except RefusedValue as exc:
            raise self.refuse(node, exc.message.replace("a number", repr(node.value)), exc.hint
                              ) from None


def _compose(text: str, source: str) -> tuple[Any, Lines]:
    """Parse, walk, then make the values; raises YAML errors and ``_DuplicateKey`` as such."""
    # One parse gives both the lines and the data (parsing twice doubled the
    # cost), with libyaml when installed: a 10,000-step file loads in about a
    # second instead of eight. The walk sits between composing the nodes and
    # making the values, so nothing expands before it was counted.
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        walk = _YamlWalk(loader, source)
        walk.walk(node, (), 1)
        return loader.construct_document(node), walk.lines
    finally:
        loader.dispose()


def _yaml_document(text: str, source: str) -> tuple[Any, Lines]:
    try:
        data, lines = _compose(text, source)
    except _DuplicateKey as exc:
        raise DefinitionError([exc.problem(source)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        if "maximum nesting depth" in problem:  # libyaml's own limit, at 1,000 levels
            raise DefinitionError([Problem(f"nested deeper than {MAX_DEPTH} levels",
                                           file=source, line=line, hint=_DEPTH_HINT)]) from None
        raise DefinitionError(
            [Problem(f"invalid YAML: {problem}{_quote_line(text, line)}", file=source,
                     line=line, hint="check the indentation and quoting around this line")]
        ) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem(f"invalid YAML: {exc}", file=source)]) from None
    except RecursionError:  # the pure-Python parser (no libyaml) recurses per level
        raise DefinitionError([Problem(f"nested deeper than {MAX_DEPTH} levels", file=source,
                                       hint=_DEPTH_HINT)]) from None
    if _SURROGATE_ESCAPE.search(text):  # libyaml refuses these escapes; PyYAML's parser not
        try:
            _check_data(data, text, numbers=False)  # the walk checked the numbers
        except RefusedValue as exc:
            raise DefinitionError([Problem(exc.message, file=source, hint=exc.hint,
                                           line=line_of(lines, exc.path))]) from None
    return data, lines


def line_of(lines: Mapping[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    """The line of ``loc``, else of the nearest enclosing location that has one."""
    for n in range(len(loc), -1, -1):
        line = lines.get(loc[:n])
        if line is not None:
            return line
    return None


def parse_document(text: str, source: str) -> tuple[Any, Lines]:
    """Parse YAML or JSON text (``.json`` files) under the limits; the data and its lines."""
    if source.endswith(".json"):
        return _json_document(text, source), {}
    return _yaml_document(text, source)
