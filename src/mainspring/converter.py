"""Payloads: values to JSON text and back, decoded to the annotated types.

Supported: JSON builtins (``NaN`` and infinities round-trip), ``bytes`` (base64),
tuples, sets, dataclasses, ``datetime``/``date``/``time``/``timedelta``, ``UUID``,
``Decimal``, ``Enum`` and pydantic models (when pydantic is installed). A payload is
one JSON text; its encoded size is checked against a limit before anything is stored.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import functools
import json
import types
import typing
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ._json import encoder
from .errors import PayloadError, PayloadTooLargeError

DEFAULT_MAX_PAYLOAD_SIZE = 2 * 1024 * 1024


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model
        return dump(mode="json")
    raise TypeError(f"{type(value).__qualname__} is not serializable")


_ENCODE = encoder(_default)


class PayloadConverter:
    """Encodes values to JSON payloads and decodes them back to annotated types."""

    def __init__(self, max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> None:
        if max_payload_size <= 0:
            raise ValueError("max_payload_size must be positive")
        self.max_payload_size = max_payload_size

    def encode(self, value: Any, *, what: str = "payload") -> str:
        """Return ``value`` as JSON text.

        Raises:
            PayloadError: ``value`` (or something inside it) cannot be serialized.
            PayloadTooLargeError: the encoded text exceeds ``max_payload_size`` bytes.
        """
        try:
            text = _ENCODE(value)
        except (TypeError, ValueError) as exc:
            raise PayloadError(
                f"cannot serialize the {what}: {exc}. Use JSON values, dataclasses, "
                "pydantic models, datetimes, UUIDs or Enums"
            ) from exc
        except RecursionError:
            raise PayloadError(
                f"cannot serialize the {what}: it nests lists, dicts or objects too "
                "deeply; pass a flatter value"
            ) from None
        size = len(text.encode("utf-8"))
        if size > self.max_payload_size:
            raise PayloadTooLargeError(
                f"the {what} is {size} bytes, over the {self.max_payload_size}-byte limit; "
                "store large data elsewhere and pass a reference, or raise max_payload_size"
            )
        return text

    def encode_args(self, args: Sequence[Any], *, what: str = "arguments") -> str:
        """Encode a list of positional arguments as one payload."""
        return self.encode(list(args), what=what)

    def decode(self, text: str | None, type_hint: Any = None) -> Any:
        """Decode JSON text to a value of ``type_hint`` (``None``/``Any``: plain JSON).

        Raises:
            PayloadError: ``text`` is not JSON, or nests too deeply to decode.
        """
        if text is None:
            return None
        return from_jsonable(_loads(text), type_hint)

    def decode_args(self, text: str, type_hints: Sequence[Any]) -> list[Any]:
        """Decode a list of arguments, each to the matching type hint when one is known.

        Raises:
            PayloadError: ``text`` is not a JSON list, or nests too deeply to decode.
        """
        raw = _loads(text)
        if not isinstance(raw, list):
            raise PayloadError("arguments payload is not a JSON list")
        return [
            from_jsonable(v, type_hints[i] if i < len(type_hints) else None)
            for i, v in enumerate(raw)
        ]


def _loads(text: str) -> Any:
    """``json.loads(text)``, any failure a :class:`PayloadError`."""
    try:
        return json.loads(text)
    except ValueError as exc:  # not JSON, or an integer too long to read
        raise PayloadError(f"payload is not valid JSON: {exc}") from exc
    except RecursionError:
        raise PayloadError("payload nests lists or objects too deeply to decode") from None


def from_jsonable(value: Any, hint: Any) -> Any:
    """Convert a decoded JSON value to ``hint``; unknown or absent hints pass it through."""
    if hint is None or hint is Any or (value is None and hint is not type(None)):
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return from_jsonable(value, typing.get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        return _from_union(value, typing.get_args(hint))
    if origin in (list, Sequence, set, frozenset) or hint in (list, set, frozenset):
        args = typing.get_args(hint)
        items = [from_jsonable(v, args[0] if args else None) for v in value]
        return (
            set(items)
            if origin is set or hint is set
            else (frozenset(items) if origin is frozenset or hint is frozenset else items)
        )
    if origin is tuple or hint is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(v, args[0]) for v in value)
        if args:
            return tuple(from_jsonable(v, a) for v, a in zip(value, args, strict=False))
        return tuple(value)
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        if len(args) == 2:
            return {from_jsonable(k, args[0]): from_jsonable(v, args[1]) for k, v in value.items()}
        return dict(value)
    if not isinstance(hint, type):
        return value
    return _from_class(value, hint)


def _from_union(value: Any, options: tuple[Any, ...]) -> Any:
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        if isinstance(option, type) and type(value) is option:
            return value
    for option in options:
        if option is type(None):
            continue
        try:
            return from_jsonable(value, option)
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return value


def _from_class(value: Any, hint: type) -> Any:
    if hint is bool or hint is str or hint is int:
        return value
    if hint is float:
        return float(value) if isinstance(value, int | float) else value
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        kwargs = {
            f.name: from_jsonable(value[f.name], hints.get(f.name))
            for f in dataclasses.fields(hint)
            if f.name in value
        }
        return hint(**kwargs)
    if issubclass(hint, enum.Enum):
        return hint(value)
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if hint is dt.date:
        return dt.date.fromisoformat(value)
    if hint is dt.time:
        return dt.time.fromisoformat(value)
    if hint is dt.timedelta:
        return dt.timedelta(seconds=value)
    if hint is uuid.UUID:
        return uuid.UUID(value)
    if hint is Decimal:
        return Decimal(value)
    if hint is bytes:
        return base64.b64decode(value)
    validate = getattr(hint, "model_validate", None)
    if callable(validate):
        return validate(value)
    return value


def type_hints_of(fn: Any) -> tuple[list[Any], Any]:
    """Return (parameter type hints, return type hint) of ``fn``, skipping ``self``.

    Computed once per function (a client passes the same ``MyWorkflow.run`` at every
    start); the list returned is shared, so do not change it.
    """
    try:
        return _cached_hints(fn)
    except TypeError:  # an unhashable callable
        return _type_hints_of(fn)


@functools.lru_cache(maxsize=1024)
def _cached_hints(fn: Any) -> tuple[list[Any], Any]:
    return _type_hints_of(fn)


def _type_hints_of(fn: Any) -> tuple[list[Any], Any]:
    import inspect

    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward references: plain JSON
        hints = {}
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if params and params[0].name == "self":
        params = params[1:]
    arg_hints: list[Any] = []
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            break
        arg_hints.append(hints.get(p.name))
    return arg_hints, hints.get("return")
