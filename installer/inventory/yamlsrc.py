"""YAML with positions: load a file into plain data plus a map from field path to file:line:column.

Every error the installer reports about a YAML file names the file, the line and the column, so
the loader keeps where each key and value stood. Pydantic validates the plain data; errors are
mapped back through `SourceMap`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from installer.errors import BadInputError

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Inventories and manifests are small; anything larger is a mistake (or an attack)."""

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, with where it is and what to do."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, str | int]:
        """JSON-ready form."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


class InputFileError(BadInputError):
    """A YAML input file is unreadable, malformed or invalid; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        head = str(self.problems[0])
        more = len(self.problems) - 1
        summary = head if not more else f"{head}\n" + "\n".join(str(p) for p in self.problems[1:])
        super().__init__(summary, remedy=None)


@dataclass
class SourceMap:
    """Where each key and value of a loaded YAML document stands in its file."""

    file: str
    keys: dict[Loc, Position] = field(default_factory=dict)
    values: dict[Loc, Position] = field(default_factory=dict)

    def locate(self, loc: Loc) -> Position:
        """Position of the deepest known part of `loc` (the key where one exists)."""
        for end in range(len(loc), 0, -1):
            prefix = loc[:end]
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return self.values.get((), Position(1, 1))

    def locate_value(self, loc: Loc) -> Position:
        """Position of the value at `loc` (falling back to its key, then its parents)."""
        return self.values.get(loc) or self.locate(loc)


def format_loc(loc: Loc) -> str:
    """`('clusters', 0, 'presets')` -> `clusters[0].presets`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _plain(node: Any, loc: Loc, smap: SourceMap) -> Any:
    """Convert ruamel's round-trip tree to plain Python, recording positions on the way."""
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key in node:
            kline, kcol = node.lc.key(key)
            vline, vcol = node.lc.value(key)
            child = (*loc, str(key))
            smap.keys[child] = Position(kline + 1, kcol + 1)
            smap.values[child] = Position(vline + 1, vcol + 1)
            # Keys are always strings in our formats; YAML `1:` or `true:` would otherwise slip by.
            out[str(key)] = _plain(node[key], child, smap)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            child = (*loc, i)
            smap.values[child] = Position(line + 1, col + 1)
            items.append(_plain(item, child, smap))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    # Timestamps, binary and other YAML types are kept as their text: fields are strings anyway.
    return str(node)


def _line_col_of_offset(data: bytes, offset: int) -> Position:
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return Position(line, col)


def read_text(path: Path, *, what: str = "file") -> str:
    """Read a small UTF-8 text file, refusing binary, huge or unreadable ones with a position."""
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputFileError(
            [Problem(name, 1, 1, "", f"cannot read {what}: {exc.strerror or exc}")]
        ) from None
    if size > MAX_FILE_BYTES:
        raise InputFileError(
            [
                Problem(
                    name,
                    1,
                    1,
                    "",
                    f"{what} is {size / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB"
                    " (is this the right file?)",
                )
            ]
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(
            [Problem(name, 1, 1, "", f"cannot read {what}: {exc.strerror or exc}")]
        ) from None
    nul = data.find(b"\x00")
    if nul >= 0:
        pos = _line_col_of_offset(data, nul)
        raise InputFileError(
            [Problem(name, pos.line, pos.column, "", f"{what} is binary, not YAML text")]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        pos = _line_col_of_offset(data, exc.start)
        raise InputFileError(
            [Problem(name, pos.line, pos.column, "", f"{what} is not UTF-8 text: {exc.reason}")]
        ) from None


def load_yaml(path: Path, *, what: str = "file") -> tuple[Any, SourceMap]:
    """Load one YAML document as plain data with its source map."""
    name = str(path)
    text = read_text(path, what=what)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        docs = list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or "malformed YAML"
        raise InputFileError(
            [Problem(name, line, col, "", f"YAML syntax error: {reason}")]
        ) from None
    except (YAMLError, RecursionError, ValueError) as exc:
        raise InputFileError([Problem(name, 1, 1, "", f"YAML error: {exc}")]) from None
    if len(docs) > 1:
        raise InputFileError(
            [Problem(name, 1, 1, "", f"{what} holds {len(docs)} YAML documents; expected one")]
        )
    if not docs or docs[0] is None:
        raise InputFileError([Problem(name, 1, 1, "", f"{what} is empty")])
    smap = SourceMap(name)
    smap.values[()] = Position(1, 1)
    try:
        data = _plain(docs[0], (), smap)
    except RecursionError:
        raise InputFileError([Problem(name, 1, 1, "", "YAML nested too deeply")]) from None
    if not isinstance(data, dict):
        raise InputFileError(
            [Problem(name, 1, 1, "", f"{what} must be a mapping of keys, not a {_kind(data)}")]
        )
    return data, smap


def _kind(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names valid at `loc` (the parent of an unknown key), for "did you mean"."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = _model_of(fields[part].annotation)
        if current is None:
            return []
    fields = getattr(current, "model_fields", None)
    return [f.alias or n for n, f in fields.items()] if fields else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `list[Pool] | None`, if there is exactly one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [m for arg in getattr(annotation, "__args__", ()) if (m := _model_of(arg)) is not None]
    return found[0] if len(found) == 1 else None


def _iter_problems(
    exc: ValidationError, model: type[BaseModel], smap: SourceMap
) -> Iterator[Problem]:
    for err in exc.errors(include_url=False):
        # pydantic marks a failing dict key with a "[key]" step; the key itself locates it.
        loc: Loc = tuple(part for part in err["loc"] if part != "[key]")
        ctx = err.get("ctx") or {}
        cause = ctx.get("error")
        violations = getattr(cause, "violations", None)
        if violations:
            for sub, message in violations:
                full = (*loc, *sub)
                pos = smap.locate(full)
                yield Problem(smap.file, pos.line, pos.column, format_loc(full), message)
            continue
        etype = err["type"]
        if etype == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(model, loc[:-1])
            hint = difflib.get_close_matches(key, allowed, n=1)
            message = f"unknown key '{key}'"
            if hint:
                message += f"; did you mean '{hint[0]}'?"
            elif allowed:
                message += f"; expected one of: {', '.join(sorted(allowed))}"
        elif etype == "missing":
            message = "required key is missing"
        elif etype in ("value_error", "assertion_error") and cause is not None:
            message = str(cause)
        else:
            message = err["msg"]
            if "input" in err and etype not in ("model_type", "dict_type") and _short(err["input"]):
                message += f" (got {err['input']!r})"
        pos = smap.locate(loc)
        yield Problem(smap.file, pos.line, pos.column, format_loc(loc), message)


def _short(value: object) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 60


def validate_data(
    data: Any, smap: SourceMap, model: type[M], *, context: dict[str, Any] | None = None
) -> M:
    """Validate loaded data against `model`, turning every error into a positioned Problem."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = list(_iter_problems(exc, model, smap))
        problems.sort(key=lambda p: (p.line, p.column))
        raise InputFileError(problems) from None


def load_yaml_model(
    path: Path, model: type[M], *, what: str = "file", context: dict[str, Any] | None = None
) -> M:
    """Load a YAML file into a pydantic model; errors name file:line:column and the field."""
    data, smap = load_yaml(path, what=what)
    return validate_data(data, smap, model, context=context)
