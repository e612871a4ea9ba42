from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
from decimal import Decimal

import pydantic
import pytest

from mainspring import PayloadError, PayloadTooLargeError
from mainspring.converter import PayloadConverter


class Mood(enum.Enum):
    HAPPY = 1
    SAD = 2


@dataclasses.dataclass
class Inner:
    when: dt.datetime
    mood: Mood


@dataclasses.dataclass
class Outer:
    id: uuid.UUID
    inner: list[Inner]
    tags: set[str]
    blob: bytes
    price: Decimal
    pair: tuple[int, str]
    maybe: Inner | None = None


class Model(pydantic.BaseModel):
    name: str
    at: dt.date


conv = PayloadConverter()


def round_trip(value: object, hint: object) -> object:
    return conv.decode(conv.encode(value), hint)


def test_dataclasses_nested_round_trip() -> None:
    value = Outer(
        id=uuid.uuid4(),
        inner=[Inner(when=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), mood=Mood.SAD)],
        tags={"a", "b"},
        blob=b"\x00\xff",
        price=Decimal("1.10"),
        pair=(1, "x"),
    )
    assert round_trip(value, Outer) == value


def test_pydantic_models() -> None:
    m = Model(name="n", at=dt.date(2026, 2, 3))
    assert round_trip(m, Model) == m
    assert round_trip([m], list[Model]) == [m]


def test_builtins_and_unions() -> None:
    assert round_trip({"a": [1, 2.5, None, True]}, None) == {"a": [1, 2.5, None, True]}
    assert round_trip(3, int | str) == 3
    assert round_trip(None, Inner | None) is None
    assert round_trip(dt.timedelta(seconds=90), dt.timedelta) == dt.timedelta(seconds=90)
    assert round_trip({"k": Mood.HAPPY}, dict[str, Mood]) == {"k": Mood.HAPPY}


def test_nan_infinity_and_nul_survive() -> None:
    out = round_trip([math.nan, math.inf, -math.inf, "a\x00b"], None)
    assert isinstance(out, list)
    assert math.isnan(out[0]) and out[1] == math.inf and out[2] == -math.inf
    assert out[3] == "a\x00b"
    assert "\x00" not in conv.encode("a\x00b")  # escaped: safe for any database text type


def test_unserializable_value_has_clear_error() -> None:
    with pytest.raises(PayloadError, match="cannot serialize the arguments"):
        conv.encode_args([object()])


def test_size_limit_counts_utf8_bytes() -> None:
    small = PayloadConverter(max_payload_size=10)
    small.encode("abcdef")
    with pytest.raises(PayloadTooLargeError, match="over the 10-byte limit"):
        small.encode("ééééé")  # 10 bytes of UTF-8 plus quotes
    with pytest.raises(ValueError):
        PayloadConverter(max_payload_size=0)


def test_invalid_json_payload() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        conv.decode("{nope", None)


def test_text_stays_as_written_unless_it_holds_a_lone_surrogate() -> None:
    c = PayloadConverter()
    assert c.encode(["héllo 🙂", "日本"]) == '["héllo 🙂","日本"]'  # not \u-escaped
    cut = "héllo \ud83d"  # half of a surrogate pair: no UTF-8 form
    text = c.encode({"k": [cut]})
    assert text == '{"k":["h\\u00e9llo \\ud83d"]}'
    text.encode("utf-8")  # a UTF-8 database column takes it
    assert c.decode(text) == {"k": [cut]}


def test_a_lone_surrogate_counts_as_its_escape_against_the_size_limit() -> None:
    c = PayloadConverter(max_payload_size=8)
    assert c.encode("\ud800") == '"\\ud800"'  # 8 bytes
    with pytest.raises(PayloadTooLargeError, match="is 14 bytes"):
        c.encode("\ud800\ud800")


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_too_deep_a_value_is_a_payload_error_not_a_recursion_error() -> None:
    with pytest.raises(PayloadError, match="nests lists, dicts or objects too deeply"):
        conv.encode_args([_nested(5000)])
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(PayloadError, match="too deeply to decode"):
        conv.decode(deep, None)
    with pytest.raises(PayloadError, match="too deeply to decode"):
        conv.decode_args(f"[{deep}]", [])


def test_arguments_that_are_not_json_are_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        conv.decode_args("[1,", [])
    with pytest.raises(PayloadError, match="4300 digits"):
        conv.decode_args("[" + "9" * 5000 + "]", [])
