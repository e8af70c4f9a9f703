"""Strict reading of a versioned YAML list of typed records (``baselines/*.yaml``).

A file is ``{version: 1, <key>: [mapping, ...]}``; each mapping becomes a frozen dataclass. An
unknown key, a missing field or a value of the wrong type is a one-line :class:`DataError` naming
the file and the field (``vlm_pairs.yaml: pairs[3].verified: expected bool, got 'yes'``).
"""

from __future__ import annotations

import types
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar, get_args, get_type_hints

import yaml

from iaa_eval.errors import DataError

T = TypeVar("T")
VERSION = 1


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits a field hint of the shapes these files use (str, bool, int, float,
    X | None)."""
    if isinstance(hint, types.UnionType):
        return any(_accepts(option, value) for option in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _record(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(names)}")
    missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING]
    if missing:
        raise DataError(f"{where}: missing key {missing[0]!r}")
    for name, value in data.items():
        if not _accepts(hints[name], value):
            raise DataError(f"{where}.{name}: expected {hints[name]}, got {value!r}")
    values = {k: float(v) if hints[k] is float else v for k, v in data.items()}
    return cls(**values)


def load_records(path: Path | str, key: str, cls: type[T]) -> tuple[T, ...]:
    """The records under ``key`` in the YAML file ``path``, each checked against ``cls``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with keys version, {key}")
    unknown = sorted(set(data) - {"version", key})
    if unknown:
        raise DataError(f"{path}: unknown key {unknown[0]!r}; allowed: version, {key}")
    if data.get("version") != VERSION:
        raise DataError(f"{path}: version {data.get('version')!r}, expected {VERSION}")
    entries = data.get(key)
    if not isinstance(entries, list):
        raise DataError(f"{path}: {key}: expected a list, got {entries!r}")
    return tuple(_record(cls, entry, f"{path}: {key}[{i}]") for i, entry in enumerate(entries))
