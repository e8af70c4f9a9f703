"""The one strict loader of iaa-eval's own files: YAML or JSON into frozen dataclasses.

Suites, gate thresholds, the baselines and training jobs are each described by dataclasses;
:func:`load` reads a file and :func:`parse` checks every value against its field's type. Unknown
keys, missing keys, wrong types (a bool is not a number), duplicate keys and, where the field's
type says so, non-finite or out-of-range numbers and blank strings are errors of one line naming
the file and the field path::

    my_suite.yaml: tasks[2].limit: expected an integer, got 'ten'

Types understood: dataclasses (nested), ``X | None`` and other unions, ``bool``, ``int``, ``float``,
``str``, ``Path``, ``Literal[...]``, ``Enum``, ``tuple[X, ...]``, ``list[X]``, ``dict[str, X]``,
``Any``, the bounded numbers below (``Annotated[float, Bounds(...)]``), non-blank strings
(:data:`NonBlank`) and file or folder names (:data:`Name`). Two conveniences of hand-written
files: a tuple of dataclasses with a :data:`KEY` field is written as a mapping
(``text: {iaa: {...}}`` fills ``kind``), and a dataclass with a :data:`SHORTHAND` field may be
written as a bare string (``- mme`` is ``{task: mme}``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from iaa_eval.errors import DataError, IAAEvalError
from iaa_eval.names import HINT, name_problem

T = TypeVar("T")
KEY = types.MappingProxyType({"config": "key"})  # field metadata: the mapping key fills it
SHORTHAND = types.MappingProxyType({"config": "shorthand"})  # field metadata: a bare string does


@dataclass(frozen=True)
class Bounds:
    """Limits of a number field: always finite, within ``minimum`` and ``maximum`` when given."""

    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: float) -> str | None:
        """Why ``value`` is out of bounds, or None."""
        if not math.isfinite(value):
            return "expected a finite number"
        if self.minimum is not None and value < self.minimum:
            return f"expected a number >= {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"expected a number <= {self.maximum:g}"
        return None


@dataclass(frozen=True)
class NotBlank:
    """A string field that must say something: a source, a name (white space alone is empty)."""

    def check(self, value: str) -> str | None:
        """Why ``value`` is blank, or None."""
        return None if value.strip() else "expected a non-blank string"


@dataclass(frozen=True)
class PathComponent:
    """A string field that becomes a file or folder name (a model name, a task alias)."""

    def check(self, value: str) -> str | None:
        """Why ``value`` cannot be one path component, or None."""
        problem = name_problem(value)
        return f"{problem}; {HINT}" if problem else None


Finite = Annotated[float, Bounds()]
NonNegative = Annotated[float, Bounds(0)]
NonNegativeInt = Annotated[int, Bounds(0)]
PositiveInt = Annotated[int, Bounds(1)]
Percent = Annotated[float, Bounds(0, 100)]
NonBlank = Annotated[str, NotBlank()]
Name = Annotated[str, PathComponent()]


class _Invalid(Exception):
    """A value that does not fit, at ``path`` (turned into a DataError naming the file)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(hint: Any) -> str:
    """How an error names the expected type."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return _describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args) if len(args) > 1 else repr(args[0])
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             Path: "a path", type(None): "null", tuple: "a list", list: "a list", dict: "a mapping"}
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return names.get(origin or hint, str(hint))


def _scalar(hint: Any, value: Any) -> tuple[bool, Any]:
    """(fits, converted) for the leaf types."""
    if hint is Any:
        return True, value
    if hint is type(None) or hint is bool or hint is str:
        return isinstance(value, hint), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
        return fits, float(value) if fits else value
    if hint is Path:
        return isinstance(value, str), Path(value) if isinstance(value, str) else value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        member = next((m for m in hint if m.value == value and type(m.value) is type(value)), None)
        return member is not None, member
    raise TypeError(f"iaa_eval.config cannot read fields of type {hint!r}")


def _convert(hint: Any, value: Any, path: str) -> Any:
    """``value`` checked against ``hint`` (and converted: lists to tuples, strings to paths)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        converted = _convert(args[0], value, path)
        for rule in (a for a in args[1:] if isinstance(a, Bounds | NotBlank | PathComponent)):
            problem = rule.check(converted)
            if problem:
                raise _Invalid(path, f"{problem}, got {_got(value)}")
        return converted
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:  # Optional[X]: X's own error says more than "X or null"
            return _convert(options[0], value, path)
        for option in options:
            try:
                return _convert(option, value, path)
            except _Invalid:
                continue
        raise _Invalid(path, f"expected {_describe(hint)}, got {_got(value)}")
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Invalid(path, f"expected {_describe(hint)}, got {_got(value)}")
    if origin in (tuple, list):
        return _sequence(hint, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Invalid(path, f"expected a mapping, got {_got(value)}")
        return {_convert(args[0], k, f"{path} key"): _convert(args[1], v, _join(path, k))
                for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, path)
    fits, converted = _scalar(hint, value)
    if not fits:
        raise _Invalid(path, f"expected {_describe(hint)}, got {_got(value)}")
    return converted


def _sequence(hint: Any, value: Any, path: str) -> tuple | list:
    origin, args = get_origin(hint), get_args(hint)
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        raise TypeError(f"iaa_eval.config reads tuple[X, ...] only, not {hint!r}")
    item = args[0]
    key = _special_field(item, KEY)
    if key is not None:  # written as {key: {other fields}}
        if not isinstance(value, dict):
            raise _Invalid(path, f"expected a mapping of {key} -> settings, got {_got(value)}")
        items = []
        for name, body in value.items():
            where = _join(path, name)
            if not isinstance(body, dict):
                raise _Invalid(where, f"expected a mapping, got {_got(body)}")
            items.append(_dataclass(item, body, where, **{key: _convert(str, name, f"{path} key")}))
        return origin(items)
    if not isinstance(value, list):
        raise _Invalid(path, f"expected a list, got {_got(value)}")
    return origin(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))


def _special_field(cls: Any, marker: types.MappingProxyType) -> str | None:
    if not dataclasses.is_dataclass(cls):
        return None
    return next((f.name for f in dataclasses.fields(cls) if f.metadata == marker), None)


def _join(path: str, name: Any) -> str:
    return f"{path}.{name}" if path else str(name)


def _dataclass(cls: type[T], value: Any, path: str, /, **fixed: Any) -> T:
    shorthand = _special_field(cls, SHORTHAND)
    if isinstance(value, str) and shorthand is not None:
        value = {shorthand: value}
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping, got {_got(value)}")
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in fixed]
    allowed = [f.name for f in fields]
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise _Invalid(path, f"unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    required = dataclasses.MISSING
    missing = [f.name for f in fields if f.name not in value
               and f.default is required and f.default_factory is required]
    if missing:
        raise _Invalid(path, f"missing key {missing[0]!r}")
    hints = get_type_hints(cls, include_extras=True)
    values = {k: _convert(hints[k], v, _join(path, k)) for k, v in value.items()}
    try:
        return cls(**fixed, **values)
    except (ValueError, IAAEvalError) as exc:  # the dataclass's own rules
        raise _Invalid(path, str(exc)) from exc


def parse(cls: type[T], data: Any, source: str, /, **fixed: Any) -> T:
    """``data`` (parsed YAML/JSON) as a ``cls``; ``fixed`` fields are given, not read.

    Raises:
        DataError: ``<source>: <field path>: <what is wrong>``.
    """
    try:
        return _dataclass(cls, data, "", **fixed)
    except _Invalid as exc:
        raise DataError(f"{source}: {exc}") from None


class _DuplicateKey(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in a mapping is an error, not a silent
    overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: the mapping's own keys may override merged ones
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if repeated:
                raise _DuplicateKey(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key {key!r}")
        result[key] = value
    return result


def read(path: Path | str) -> Any:
    """A YAML (or, for ``*.json``, JSON) file's content, refusing duplicate keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        if path.suffix == ".json":
            return json.loads(text, object_pairs_hook=_no_duplicates)
        loader = _StrictLoader(text)  # what yaml.load does, with this SafeLoader subclass
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _DuplicateKey as exc:
        raise DataError(f"{path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except (yaml.YAMLError, TypeError) as exc:  # TypeError: PyYAML on an unhashable key
        raise DataError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc


def load(cls: type[T], path: Path | str, /, **fixed: Any) -> T:
    """Read ``path`` and :func:`parse` it as a ``cls``."""
    return parse(cls, read(path), str(path), **fixed)
