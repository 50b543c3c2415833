"""Typed JSON inputs: executors annotate their input type (usually a dataclass) and the engine
decodes the stored JSON into it, naming the bad field when it does not fit, derives a JSON Schema
for the dashboard's "start run" form, and encodes return values back to JSON.

Standard library only, so the engine core stays importable without Django.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

_NoneType = type(None)
_UNION_ORIGINS = (Union, types.UnionType)
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", _NoneType: "null"}
_EXPECTED = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", _NoneType: "null"}
_KINDS = {str: "string", _NoneType: "null", list: "array", tuple: "array", dict: "object"}  # else type name


class InputError(ValueError):
    """Bad input for a typed parameter; ``path`` points at the field so operators can fix it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


def decode(tp: Any, value: Any) -> Any:
    """Validate ``value`` (parsed JSON) and build an instance of ``tp``; raises InputError."""
    if tp is None or tp is inspect.Parameter.empty:
        return value
    return _decode(tp, value, "")


def json_schema(tp: Any) -> dict[str, Any]:
    """Describe ``tp`` as a JSON Schema so the dashboard can render and check an input form."""
    return _schema(tp, frozenset())


def encode(value: Any) -> Any:
    """Turn an executor's return value into JSON-native data (the inverse of ``decode``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if isinstance(value, dt.date):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, Mapping):
        return {(k.value if isinstance(k, enum.Enum) else k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    return value


def annotation_of(func: Callable[..., Any], position: int) -> Any:
    """Resolved annotation of positional parameter ``position`` of ``func``, or None if unannotated."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = [p for p in params if p.kind is p.VAR_POSITIONAL]  # `*args: T` types every extra argument
    param = positional[position] if position < len(positional) else next(iter(star), None)
    if param is None or param.annotation is inspect.Parameter.empty:
        return None
    if not isinstance(param.annotation, str):
        return param.annotation
    method = "__init__" if inspect.isclass(func) else "__call__"
    target = func if inspect.isroutine(func) else getattr(func, method)
    try:
        return typing.get_type_hints(target)[param.name]
    except (KeyError, TypeError, AttributeError):  # partials etc.: inspect knows how to unwrap them
        return inspect.signature(func, eval_str=True).parameters[param.name].annotation


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in _UNION_ORIGINS:
        return " | ".join(map(_type_name, args))
    if origin is not None:
        inner = map(repr, args) if origin is Literal else map(_type_name, args)
        return f"{getattr(origin, '__name__', origin)}[{', '.join(inner)}]"
    if tp in (None, _NoneType, Ellipsis):
        return "..." if tp is Ellipsis else "None"
    return getattr(tp, "__name__", repr(tp))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _expect(ok: bool, expected: str, value: Any, path: str) -> None:
    if not ok:
        raise InputError(path, f"expected {expected}, got {_kind(value)}")


def _decode(tp: Any, value: Any, path: str) -> Any:
    if tp is Any or tp is object:
        return value
    if tp is None:
        tp = _NoneType
    origin, args = get_origin(tp), get_args(tp)
    if origin is typing.Annotated:
        return _decode(args[0], value, path)
    if origin in _UNION_ORIGINS:
        return _decode_union(args, value, path)
    if origin is Literal:
        return _choose([(a, a) for a in args], value, path)
    if tp in (str, bool, int, _NoneType):
        wrong_bool = tp is int and isinstance(value, bool)
        _expect(isinstance(value, tp) and not wrong_bool, _EXPECTED[tp], value, path)
        return value
    if tp is float:
        _expect(isinstance(value, int | float) and not isinstance(value, bool), "a number", value, path)
        return float(value)
    if tp in (dt.datetime, dt.date):
        what = "an ISO-8601 date-time" if tp is dt.datetime else "an ISO-8601 date"
        _expect(isinstance(value, str), f"{what} string", value, path)
        try:
            return tp.fromisoformat(value)
        except ValueError:
            raise InputError(path, f"expected {what}, got {value!r}") from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _choose([(m.value, m) for m in tp], value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, path)
    if typing.is_typeddict(tp):
        return _decode_typeddict(tp, value, path)
    container = origin or tp
    if container in (list, tuple, Sequence):
        _expect(isinstance(value, list | tuple), "an array", value, path)
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(path, f"expected an array of {len(args)} items, got {len(value)}")
            return tuple(
                _decode(t, v, _join(path, i)) for i, (t, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        items = [_decode(item, v, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if container is tuple else items
    if container in (dict, Mapping):
        _expect(isinstance(value, dict), "an object", value, path)
        kt, vt = args or (Any, Any)
        return {_decode(kt, k, _join(path, k)): _decode(vt, v, _join(path, k)) for k, v in value.items()}
    raise TypeError(f"unsupported input type {tp!r}")


def _choose(options: list[tuple[Any, Any]], value: Any, path: str) -> Any:
    """Literal/Enum lookup by JSON value; compares types too, since ``True == 1``."""
    for json_value, result in options:
        if json_value == value and type(json_value) is type(value):
            return result
    raise InputError(path, f"expected one of {', '.join(repr(o) for o, _ in options)}, got {value!r}")


def _decode_union(members: tuple[Any, ...], value: Any, path: str) -> Any:
    if value is None and _NoneType in members:
        return None
    candidates = [m for m in members if m is not _NoneType]
    if len(candidates) == 1:  # Optional[X]: X's own error is the most useful one
        return _decode(candidates[0], value, path)
    errors: list[InputError] = []
    for member in members:
        try:
            return _decode(member, value, path)
        except InputError as exc:
            errors.append(exc)
    deeper = [e for e in errors if e.path != path]  # a member that matched the outer shape
    if deeper:
        raise max(deeper, key=lambda e: len(e.path))
    names = " | ".join(map(_type_name, members))
    raise InputError(path, f"does not match any of {names}, got {_kind(value)}")


def _check_keys(value: Any, allowed: set[str], ignored: set[str], path: str) -> None:
    _expect(isinstance(value, dict), "an object", value, path)
    for key in value:
        if key not in allowed and key not in ignored:
            raise InputError(_join(path, key), "unexpected field")


def _decode_dataclass(cls: type, value: Any, path: str) -> Any:
    fields = dataclasses.fields(cls)
    init = {f.name: f for f in fields if f.init}
    _check_keys(value, set(init), {f.name for f in fields if not f.init}, path)  # encode() emits init=False
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in init.items():
        if name in value:
            kwargs[name] = _decode(hints[name], value[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(_join(path, name), "missing required field")
    try:
        return cls(**kwargs)
    except InputError as exc:  # raised by __post_init__ validation, relative to this object
        sep = "." if path and exc.path and not exc.path.startswith("[") else ""
        raise InputError(f"{path}{sep}{exc.path}", exc.problem) from None
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def _decode_typeddict(cls: type, value: Any, path: str) -> dict[str, Any]:
    hints = _hints(cls)
    _check_keys(value, set(hints), set(), path)
    for key in sorted(cls.__required_keys__):  # type: ignore[attr-defined]
        if key not in value:
            raise InputError(_join(path, key), "missing required field")
    return {k: _decode(hints[k], v, _join(path, k)) for k, v in value.items()}


def _description(cls: type) -> str | None:
    doc = cls.__dict__.get("__doc__")
    if not doc or not doc.strip() or doc.startswith(f"{cls.__name__}("):  # dataclass's generated doc
        return None
    return inspect.cleandoc(doc).splitlines()[0]


def _titled(cls: type, schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"title": cls.__name__}
    if desc := _description(cls):
        out["description"] = desc
    return {**out, **schema}


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    kinds = {_JSON_TYPES.get(type(v)) for v in values}
    schema: dict[str, Any] = {"enum": values}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "type" in schema:
        kind = schema["type"]
        schema["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]} if schema else schema


def _schema(tp: Any, seen: frozenset[Any]) -> dict[str, Any]:
    if tp is None or tp is inspect.Parameter.empty or tp is Any or tp is object:
        return {}
    origin, args = get_origin(tp), get_args(tp)
    if origin is typing.Annotated:
        return _schema(args[0], seen)
    if origin in _UNION_ORIGINS:
        parts = [_schema(m, seen) for m in args if m is not _NoneType]
        has_null = len(parts) < len(args)
        if len(parts) == 1:
            return _nullable(parts[0]) if has_null else parts[0]
        if all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
            return {"type": [p["type"] for p in parts] + (["null"] if has_null else [])}
        return {"anyOf": parts + ([{"type": "null"}] if has_null else [])}
    if origin is Literal:
        return _enum_schema(list(args))
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    if tp is dt.datetime:
        return {"type": "string", "format": "date-time"}
    if tp is dt.date:
        return {"type": "string", "format": "date"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _titled(tp, _enum_schema([m.value for m in tp]))
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)):
        if tp in seen:  # recursive type: stop expanding rather than loop forever
            return {"type": "object", "title": tp.__name__}
        return _titled(tp, _object_schema(tp, seen | {tp}))
    container = origin or tp
    if container in (list, tuple, Sequence):
        if container is tuple and args and args[-1] is not Ellipsis:
            items = [_schema(a, seen) for a in args]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        return {"type": "array", **({"items": _schema(args[0], seen)} if args else {})}
    if container in (dict, Mapping):
        values = _schema(args[1], seen) if args else {}
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    raise TypeError(f"unsupported input type {tp!r}")


def _object_schema(cls: type, seen: frozenset[Any]) -> dict[str, Any]:
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    if typing.is_typeddict(cls):
        properties = {name: _schema(hint, seen) for name, hint in hints.items()}
        required = [n for n in hints if n in cls.__required_keys__]  # type: ignore[attr-defined]
    else:
        for f in (f for f in dataclasses.fields(cls) if f.init):
            prop = _schema(hints[f.name], seen)
            if "description" in f.metadata:
                prop["description"] = f.metadata["description"]
            if f.default is not dataclasses.MISSING:
                try:
                    prop["default"] = json.loads(json.dumps(encode(f.default)))  # plain JSON values only
                except (TypeError, ValueError):
                    pass
            elif f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            properties[f.name] = prop
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
