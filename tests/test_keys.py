"""The key and argument encoding (flink_agents_ext.keys): the encoded text is stored with
every record, so it is pinned exactly: a change would make a restored job miss its records."""

from __future__ import annotations

import datetime
import enum
import hashlib
import math
from collections import namedtuple
from typing import Any

import pytest
from pyflink.common import Row

from flink_agents_ext.keys import MAX_INLINE_KEY, KeyEncodingError, digest_call, encode_key


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


Point = namedtuple("Point", "x y")


@pytest.mark.parametrize("value, text", [
    (None, "n"),
    (True, "b:1"),
    (False, "b:0"),
    (0, "i:0"),
    (-12, "i:-12"),
    (Level.HIGH, "i:3"),
    (1.0, "f:1.0"),
    (-0.5, "f:-0.5"),
    (math.inf, "f:inf"),
    ("a", 's:"a"'),
    ("ü\"", 's:"ü\\""'),
    (Name("n"), 's:"n"'),
    (b"\x01\xff", "x:01ff"),
    (bytearray(b"\x02"), "x:02"),
    ((), "t[]"),
    ((1, "a"), 't[i:1,s:"a"]'),
    (Point(1, 2), "t[i:1,i:2]"),
    ([1, [None]], "l[i:1,l[n]]"),
    ({"b": 1, "a": [2]}, 'd{s:"a":l[i:2],s:"b":i:1}'),
    ({2: "x", 1: "y"}, 'd{i:1:s:"y",i:2:s:"x"}'),
    (Row(1, "a"), 'r[i:1,s:"a"]'),
    (Row(id=1, name="a"), 'r["id", "name"][i:1,s:"a"]'),
])
def test_encoding_is_exact(value: Any, text: str) -> None:
    assert encode_key(value) == text


def test_equal_python_values_of_different_types_encode_differently() -> None:
    values = [1, 1.0, True, "1", b"1", (1,), [1], {1: 1}, Row(1), None, 0, False]
    assert len({encode_key(v) for v in values}) == len(values)


@pytest.mark.parametrize("value", [float("nan"), (1, float("nan")), {"x": float("nan")}])
def test_nan_cannot_be_encoded(value: Any) -> None:
    with pytest.raises(KeyEncodingError,
                       match=r"^NaN has no stable identity and cannot be encoded$"):
        encode_key(value)


@pytest.mark.parametrize("value, name", [(object(), "builtins.object"), ({1, 2}, "builtins.set"),
                                         ((1, object()), "builtins.object"),
                                         ([frozenset()], "builtins.frozenset"),
                                         (datetime.date(2026, 12, 2), "datetime.date")])
def test_other_types_name_the_type(value: Any, name: str) -> None:
    with pytest.raises(KeyEncodingError, match=rf"^values of type {name} have no stable "
                                               r"encoding; use None, bool, int"):
        encode_key(value)
    assert issubclass(KeyEncodingError, ValueError)


def test_long_keys_are_stored_as_a_digest() -> None:
    # "s:" + quotes take 4 characters.
    fits = "k" * (MAX_INLINE_KEY - 4)
    assert encode_key(fits) == f's:"{fits}"'
    longer = fits + "k"
    text = f's:"{longer}"'
    assert encode_key(longer) == "h:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert MAX_INLINE_KEY == 512


def test_call_digest() -> None:
    base = digest_call((1, "a"), {})
    assert base == hashlib.sha256(b't[i:1,s:"a"]').hexdigest()[:32]
    with_kwargs = digest_call((1, "a"), {"k": 2})
    assert with_kwargs == hashlib.sha256(b't[i:1,s:"a"];d{s:"k":i:2}').hexdigest()[:32]
    assert digest_call((1,), {}) != digest_call(("1",), {})
    assert digest_call((), {"a": 1, "b": 2}) == digest_call((), {"b": 2, "a": 1})
    with pytest.raises(KeyEncodingError):
        digest_call((object(),), {})
