"""How the configuration schema (:mod:`pg_backup.config`) is declared and read, whatever its options.

:func:`opt` and :func:`section` declare an option (default, one-line documentation, constraints) or
a section in a dataclass field's ``metadata``; :func:`options_of` flattens a tree of such dataclasses
into dotted key paths (:class:`OptionInfo`); :func:`build` makes the tree from a parsed YAML mapping,
collecting every problem instead of stopping at the first; :func:`secret_file_problems` checks the
files that hold secrets. The options themselves are declared in :mod:`pg_backup.config` and nowhere
else.
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, get_type_hints


def opt(default: Any, doc: str, *, choices: Tuple[Any, ...] = (), minimum: Optional[int] = None,
        maximum: Optional[int] = None, secret_file: bool = False, pattern: Optional[str] = None,
        example: Any = None, item: Optional[type] = None) -> Any:
    """Declare one option: its default, its one-line documentation and its constraints.

    ``item`` makes a list option a list of mappings, each validated against that dataclass."""
    meta = {"doc": doc, "choices": choices, "minimum": minimum, "maximum": maximum,
            "secret_file": secret_file, "pattern": pattern, "example": example, "item": item}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "section": True})


@dataclass(frozen=True)


class OptionInfo:
    path: str
    type_name: str
    default: Any
    doc: str
    choices: Tuple[Any, ...]
    minimum: Optional[int]
    maximum: Optional[int]
    secret_file: bool
    example: Any


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) or str(tp)
    if "List" in str(tp) or "list" in str(tp):
        return "list"
    if "Optional" in str(tp) or "None" in str(tp):
        inner = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
        return _type_name(inner[0]) if inner else "str"
    return {"str": "str", "int": "int", "bool": "bool"}.get(text, text)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def options_of(cls: type, prefix: str = "") -> Iterator[OptionInfo]:
    """Every option of a tree of option dataclasses as a dotted key path, in declaration order."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if f.metadata.get("section"):
            yield from options_of(hints[f.name], path + ".")
            continue
        m = f.metadata
        yield OptionInfo(path, _type_name(hints[f.name]), _field_default(f), m["doc"], tuple(m["choices"]),
                         m["minimum"], m["maximum"], bool(m["secret_file"]), m["example"])


def build(cls: type, data: Any, path: str, problems: List[str]) -> Any:
    """An instance of ``cls`` from a parsed YAML mapping; every problem (unknown key, wrong type, out
    of range, not one of the choices) is appended to ``problems`` and its field keeps the default."""
    hints = get_type_hints(cls)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path or '<top>'}: must be a mapping, got {type(data).__name__}")
        data = {}
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            problems.append(f"{where}: unknown key (known here: {', '.join(sorted(known))})")
    values: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        if f.metadata.get("section"):
            values[f.name] = build(tp, data.get(f.name), where, problems)
            continue
        if f.name not in data or (data[f.name] is None and _type_name(tp) != "list"):
            values[f.name] = _field_default(f)
            continue
        values[f.name] = _coerce(data[f.name], tp, f.metadata, where, problems, _field_default(f))
    return cls(**values)


def _coerce(value: Any, tp: Any, meta: Any, where: str, problems: List[str], default: Any) -> Any:
    kind = _type_name(tp)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: must be true or false, got {value!r}")
        return default
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: must be a whole number, got {value!r}")
            return default
        lo, hi = meta["minimum"], meta["maximum"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            problems.append(f"{where}: {value} is out of range {lo}..{hi}")
            return default
        return value
    if kind == "list" and meta.get("item") is not None:
        if value is None:
            return []
        if not isinstance(value, list):
            problems.append(f"{where}: must be a list of mappings, got {value!r}")
            return default
        return [build(meta["item"], entry, f"{where}[{i}]", problems) for i, entry in enumerate(value)]
    if kind == "list":
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problems.append(f"{where}: must be a list of non-empty strings, got {value!r}")
            return default
        return list(value)
    # strings
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        problems.append(f"{where}: must be a string, got {value!r}")
        return default
    choices = meta["choices"]
    if choices and value not in choices:
        shown = ", ".join(str(c) for c in choices if c is not None)
        problems.append(f"{where}: {value!r} is not one of {shown}")
        return default
    if meta["pattern"] and not re.match(meta["pattern"], value):
        problems.append(f"{where}: {value!r} must match {meta['pattern']}")
        return default
    return value


def _check_secret_file(path: str, where: str, problems: List[str], must_exist: bool = True) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if must_exist:
            problems.append(f"{where}: file {path} does not exist")
        return
    except PermissionError:
        problems.append(f"{where}: file {path} is not readable by this user")
        return
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(f"{where}: {path} holds a secret but is accessible by group or others "
                        f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}")


def secret_file_problems(settings: Any, problems: List[str]) -> None:
    """Every file named by a ``secret_file`` option must exist and be private to its owner."""
    for o in options_of(type(settings)):
        if not o.secret_file:
            continue
        value = _get_path(settings, o.path)
        for item in (value if isinstance(value, list) else [value]):
            if item:
                _check_secret_file(item, o.path, problems)


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
