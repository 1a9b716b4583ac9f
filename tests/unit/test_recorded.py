"""Tests for the Erlang External Term Format encoding of recorded job return values.

Reference bytes below were produced with Erlang/OTP 25's ``term_to_binary/1,2``. OTP 25
writes atoms as latin-1 ``ATOM_EXT`` by default, so references for terms containing atoms
were generated with ``[{minor_version, 2}]``, which writes ``SMALL_ATOM_UTF8_EXT`` exactly as
``encode_term`` does (and as OTP 26+ does by default).
"""

from __future__ import annotations

import base64
import datetime
import math
import zlib
from decimal import Decimal
from typing import Any

import pytest

from oban._recorded import (
    MAX_DEPTH,
    Atom,
    decode_recorded,
    decode_term,
    encode_recorded,
    encode_term,
)

# --- Reference encodings from Erlang ---------------------------------------------------------

# term_to_binary(Term, [{minor_version, 2}]) for values that encode_term must reproduce exactly.
ERLANG_EXACT: list[tuple[Any, str]] = [
    (0, "836100"),
    (42, "83612a"),
    (255, "8361ff"),
    (256, "836200000100"),
    (-1, "8362ffffffff"),
    (2147483647, "83627fffffff"),
    (-2147483648, "836280000000"),
    (2147483648, "836e040000000080"),
    (-2147483649, "836e040101000080"),
    (2**64, "836e0900000000000000000001"),
    (-(2**100), "836e0d01" + "00" * 12 + "10"),
    (1 << 2048, "836f0000010100" + "00" * 256 + "01"),
    (-(1 << 2048), "836f0000010101" + "00" * 256 + "01"),
    (1.5, "83463ff8000000000000"),
    (-0.1, "8346bfb999999999999a"),
    (
        [0.0, -2.5e-300, 1.0e300],
        "836c000000034600000000000000004681bac9a7b3b7302f467e37e43c8800759c6a",
    ),
    ("héllo", "836d0000000668c3a96c6c6f"),
    ("", "836d00000000"),
    (b"\xff\x00", "836d00000002ff00"),
    ([], "836a"),
    ((), "836800"),
    ({}, "837400000000"),
    ((Atom("ok"), "x"), "83680277026f6b6d0000000178"),
    (Atom("ünï"), "837705c3bc6ec3af"),
    (Atom("é" * 200), "83760190" + "c3a9" * 200),
    (tuple([0] * 256), "836900000100" + "6100" * 256),
    (
        {"a": [1, 2.5, None, True]},
        "8374000000016d00000001616c00000004610146400400000000000077036e696c7704747275656a",
    ),
    (
        {"k": ([], {}, [(1,)], False)},
        "8374000000016d000000016b68046a74000000006c00000001680161016a770566616c7365",
    ),
]

# Default OTP 25 term_to_binary output that encode_term does not produce (other tags), with
# the Python value decode_term must return.
ERLANG_OTHER_TAGS: list[tuple[str, Any]] = [
    # #{<<"a">> => [1, 2.5, nil, true]} with latin-1 ATOM_EXT atoms
    (
        "8374000000016d00000001616c0000000461014640040000000000006400036e696c640004747275656a",
        {"a": [1, 2.5, None, True]},
    ),
    # {ok, <<"x">>}
    ("8368026400026f6b6d0000000178", (Atom("ok"), "x")),
    # 'ünï' as ATOM_EXT (latin-1)
    ("83640003fc6eef", Atom("ünï")),
    # "abc" (a charlist) and [1, 2, 3] are STRING_EXT
    ("836b0003616263", [97, 98, 99]),
    ("836b0003010203", [1, 2, 3]),
    # term_to_binary(lists:duplicate(20, <<"abc">>), [compressed])
    ("8350000000a6789ccb61606010c90512cc8949c98395ce0200518620a3", ["abc"] * 20),
]


def _erlang_bytes(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


# --- Exact bytes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), ERLANG_EXACT, ids=lambda v: repr(v)[:30])
def test_encode_matches_erlang_bytes(value: Any, expected: str) -> None:
    assert encode_term(value) == _erlang_bytes(expected)


@pytest.mark.parametrize(("value", "expected"), ERLANG_EXACT, ids=lambda v: repr(v)[:30])
def test_decode_erlang_bytes(value: Any, expected: str) -> None:
    decoded = decode_term(_erlang_bytes(expected))
    if isinstance(value, bytes):
        assert decoded == value  # b"\xff\x00" is not UTF-8, so it stays bytes
    else:
        assert decoded == value
        assert type(decoded) is type(value)


@pytest.mark.parametrize(("data", "expected"), ERLANG_OTHER_TAGS, ids=lambda v: repr(v)[:30])
def test_decode_other_erlang_tags(data: str, expected: Any) -> None:
    assert decode_term(_erlang_bytes(data)) == expected


def test_map_from_erlang_as_decimal_list() -> None:
    # The exact list printed by:
    #   binary_to_list(term_to_binary(#{<<"a">> => [1, 2.5, nil, true]}))
    data = bytes(
        [131, 116, 0, 0, 0, 1, 109, 0, 0, 0, 1, 97, 108, 0, 0, 0, 4, 97, 1, 70, 64, 4, 0]
    ) + bytes([0, 0, 0, 0, 0, 100, 0, 3, 110, 105, 108, 100, 0, 4, 116, 114, 117, 101, 106])
    assert decode_term(data) == {"a": [1, 2.5, None, True]}


# --- Round trips --------------------------------------------------------------------------------

ROUND_TRIPS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    255,
    256,
    -1,
    -256,
    2**31 - 1,
    -(2**31),
    2**31,
    -(2**31) - 1,
    2**63,
    -(2**63),
    2**64 - 1,
    10**100,
    -(10**100),
    (1 << 2040) - 1,  # 255 bytes: the largest SMALL_BIG_EXT
    1 << 2040,  # 256 bytes: LARGE_BIG_EXT
    -(1 << 5000),
    0.0,
    -0.0,
    1.5,
    -1e-300,
    1.7976931348623157e308,
    5e-324,
    math.pi,
    "",
    "hello",
    "héllo wörld ✓ 日本語 🎉",
    "a\x00b",
    "x" * 100_000,
    b"\xff\xfe\x00",
    [],
    [1, "two", 3.0, None],
    [[], [[]], [[[]]]],
    (),
    (1,),
    (Atom("ok"), 42),
    tuple(range(255)),
    tuple(range(256)),
    tuple(range(1000)),
    {},
    {"a": 1},
    {"nested": {"deeper": {"list": [1, {"x": (None, True)}]}}},
    {1: "int key", 2.5: "float key", (1, 2): "tuple key", Atom("k"): "atom key", None: 0},
    {"é": "ünïcode", "🎉": ["emoji"]},
    Atom("ok"),
    Atom(""),
    Atom("Elixir.MyApp.Worker"),
    Atom("ünï"),
    Atom("日" * 255),
    {"items": [{"id": i, "tags": [Atom("a"), "b"]} for i in range(50)]},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: repr(v)[:40])
def test_round_trip(value: Any) -> None:
    encoded = encode_term(value)
    assert encoded[0] == 131
    decoded = decode_term(encoded)
    assert decoded == value
    assert type(decoded) is type(value)
    assert decode_recorded(encode_recorded(value)) == value


def test_round_trip_negative_zero_keeps_sign() -> None:
    assert math.copysign(1.0, decode_term(encode_term(-0.0))) == -1.0


def test_round_trip_preserves_nested_types() -> None:
    value = {"t": (1, [2, (3,)]), "a": Atom("x"), "s": "x", "b": b"\x80"}
    decoded = decode_term(encode_term(value))
    assert decoded == value
    assert isinstance(decoded["t"], tuple)
    assert isinstance(decoded["t"][1], list)
    assert isinstance(decoded["t"][1][1], tuple)
    assert type(decoded["a"]) is Atom
    assert type(decoded["s"]) is str
    assert type(decoded["b"]) is bytes


def test_utf8_bytes_decode_as_str() -> None:
    # Erlang has no separate string type, so a UTF-8 binary comes back as str.
    assert decode_term(encode_term(b"abc")) == "abc"
    assert decode_term(encode_term(bytearray(b"\xff"))) == b"\xff"


def test_bytearray_encodes_as_binary() -> None:
    assert encode_term(bytearray(b"ab")) == encode_term(b"ab")


def test_atoms_for_nil_true_false_decode_to_python_constants() -> None:
    assert decode_term(encode_term(Atom("nil"))) is None
    assert decode_term(encode_term(Atom("true"))) is True
    assert decode_term(encode_term(Atom("false"))) is False


def test_atom_behaves_like_str() -> None:
    atom = Atom("status")
    assert atom == "status"
    assert {"status": 1}[atom] == 1
    assert repr(atom) == "Atom('status')"
    decoded = decode_term(encode_term({Atom("status"): "ok"}))
    assert decoded["status"] == "ok"


def test_int_subclasses_encode_as_integers() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 300

    assert encode_term(Color.RED) == encode_term(300)


def test_shared_references_are_not_cycles() -> None:
    shared = [1, 2]
    value = {"a": shared, "b": shared, "c": [shared, shared]}
    assert decode_term(encode_term(value)) == value


def test_atom_tags_by_byte_length() -> None:
    # < 256 UTF-8 bytes: SMALL_ATOM_UTF8_EXT; otherwise ATOM_UTF8_EXT with a 2-byte length.
    assert encode_term(Atom("a" * 255))[1] == 119
    assert encode_term(Atom("é" * 127))[1:3] == bytes([119, 254])
    assert encode_term(Atom("é" * 128))[1:4] == bytes([118, 1, 0])


def test_int_tag_boundaries() -> None:
    assert encode_term(255)[1] == 97
    assert encode_term(256)[1] == 98
    assert encode_term(-1)[1] == 98
    assert encode_term(2**31 - 1)[1] == 98
    assert encode_term(2**31)[1] == 110
    assert encode_term(-(2**31) - 1)[1] == 110
    assert encode_term((1 << 2040) - 1)[1:3] == bytes([110, 255])
    assert encode_term(1 << 2040)[1] == 111


# --- encode_recorded / decode_recorded ----------------------------------------------------------


@pytest.mark.parametrize("value", [None, 1, "a", "ab", "abc", [1, 2], {"a": [1, 2.5]}])
def test_encode_recorded_has_no_padding(value: Any) -> None:
    text = encode_recorded(value)
    assert isinstance(text, str)
    assert "=" not in text
    assert text.isascii()
    padded = text + "=" * (-len(text) % 4)
    assert base64.b64decode(padded, validate=True) == encode_term(value)


def test_encode_recorded_known_value() -> None:
    # base64 of term_to_binary(#{<<"a">> => [1, 2.5, nil, true]}, [{minor_version, 2}])
    expected = base64.b64encode(
        bytes.fromhex(
            "8374000000016d00000001616c00000004610146400400000000000077036e696c7704747275656a"
        )
    )
    assert encode_recorded({"a": [1, 2.5, None, True]}) == expected.decode().rstrip("=")


def test_decode_recorded_accepts_padded_text() -> None:
    raw = encode_term("ab")
    assert decode_recorded(base64.b64encode(raw).decode()) == "ab"


def test_decode_recorded_compressed_term_from_erlang() -> None:
    data = _erlang_bytes(ERLANG_OTHER_TAGS[-1][0])
    text = base64.b64encode(data).decode().rstrip("=")
    assert decode_recorded(text) == ["abc"] * 20


@pytest.mark.parametrize("text", ["!!!!", "a", "abc$", "é", "8w"])
def test_decode_recorded_invalid_text(text: str) -> None:
    with pytest.raises(ValueError):
        decode_recorded(text)


# --- Encoding errors ----------------------------------------------------------------------------


def test_unsupported_top_level_type() -> None:
    with pytest.raises(TypeError, match=r"^value is a set, which cannot be recorded$"):
        encode_term({1, 2})


def test_unsupported_type_error_names_path() -> None:
    value = {"items": [1, 2, {3}]}
    with pytest.raises(TypeError) as info:
        encode_term(value)
    assert str(info.value) == "value['items'][2] is a set, which cannot be recorded"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "value is an object, which cannot be recorded"),
        (
            {"at": datetime.datetime(2024, 1, 1)},
            "value['at'] is a datetime.datetime, which cannot be recorded",
        ),
        (
            [(1, Decimal("1.5"))],
            "value[0][1] is a decimal.Decimal, which cannot be recorded",
        ),
        ({1: {"x": frozenset()}}, "value[1]['x'] is a frozenset, which cannot be recorded"),
        (
            {"k": {frozenset(): 1}},
            "value['k'] has a key that is a frozenset, which cannot be recorded",
        ),
        (
            {(1, object()): 1},
            "value has a key (1, <object object at",
        ),
        (memoryview(b"x"), "value is a memoryview, which cannot be recorded"),
        ([1, 2j], "value[1] is a complex, which cannot be recorded"),
    ],
)
def test_unsupported_type_messages(value: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        encode_term(value)
    assert str(info.value).startswith(message)


def test_unsupported_type_in_tuple_key_names_key_and_inner_path() -> None:
    with pytest.raises(TypeError) as info:
        encode_term({"k": {(1, frozenset({2})): 1}})
    assert str(info.value) == (
        "value['k'] has a key (1, frozenset({2})) whose [1] is a frozenset, "
        "which cannot be recorded"
    )


def test_encode_recorded_raises_same_type_error() -> None:
    with pytest.raises(TypeError, match=r"value\['a'\] is a set"):
        encode_recorded({"a": set()})


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected(number: float) -> None:
    with pytest.raises(ValueError, match=r"^value\['x'\]\[0\] is the float"):
        encode_term({"x": [number]})


def test_self_referencing_list_is_rejected() -> None:
    value: list[Any] = [1]
    value.append(value)
    with pytest.raises(ValueError, match=r"^value\[1\] is a reference back to a containing list"):
        encode_term(value)


def test_self_referencing_dict_is_rejected() -> None:
    value: dict[str, Any] = {"a": {"b": []}}
    value["a"]["b"].append(value)
    with pytest.raises(ValueError, match=r"^value\['a'\]\['b'\]\[0\] is a reference back"):
        encode_term(value)


def test_excessive_nesting_is_rejected() -> None:
    value: list[Any] = []
    for _ in range(MAX_DEPTH + 10):
        value = [value]
    with pytest.raises(ValueError, match="nested more than"):
        encode_term(value)


def test_nesting_up_to_limit_round_trips() -> None:
    value: list[Any] = []
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert decode_term(encode_term(value)) == value


def test_overlong_atom_is_rejected() -> None:
    # Erlang raises system_limit for atoms longer than 255 characters.
    with pytest.raises(ValueError, match="limited to 255"):
        encode_term([Atom("x" * 256)])


# --- Decoding errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x61\x01",  # missing version byte
        b"\x82\x61\x01",  # wrong version byte
        b"\x83",  # no term
        b"\x83\x62\x00\x00",  # truncated INTEGER_EXT
        b"\x83\x46\x00",  # truncated NEW_FLOAT_EXT
        b"\x83\x6d\x00\x00\x00\x05abc",  # truncated BINARY_EXT
        b"\x83\x6c\x00\x00\x00\x02\x61\x01",  # truncated LIST_EXT
        b"\x83\x6c\xff\xff\xff\xff\x61\x01",  # absurd list length
        b"\x83\x68\x03\x61\x01",  # truncated tuple
        b"\x83\x74\x00\x00\x00\x01\x61\x01",  # map missing a value
        b"\x83\x6e\x02\x00\x01",  # truncated SMALL_BIG_EXT
        b"\x83\x6e\x01\x02\x01",  # invalid bignum sign
        b"\x83\x77\x05ab",  # truncated atom
        b"\x83\x77\x02\xff\xfe",  # atom not UTF-8
        b"\x83\x6b\x00\x05ab",  # truncated STRING_EXT
        b"\x83\x01",  # unknown tag
        b"\x83\x58" + b"\x00" * 20,  # NEW_PID_EXT is not supported
        b"\x83\x61\x01\x00",  # trailing bytes
        b"\x83\x6c\x00\x00\x00\x01\x61\x01\x61\x02",  # improper list [1 | 2] from Erlang
        b"\x83\x46\x7f\xf8\x00\x00\x00\x00\x00\x00",  # NaN (Erlang rejects it too)
        b"\x83\x74\x00\x00\x00\x02\x61\x01\x61\x01\x61\x01\x61\x02",  # duplicate map key
        b"\x83\x74\x00\x00\x00\x02\x61\x01\x61\x01\x77\x04true\x61\x02",  # 1 and true collide
        b"\x83\x74\x00\x00\x00\x01\x6a\x61\x01",  # [] key is unhashable in Python
        b"\x83\x50\x00\x00",  # truncated compressed header
        b"\x83\x50\x00\x00\x00\x03notzlib",  # invalid zlib data
        b"\x83\x50\x00\x00\x00\x09" + zlib.compress(b"\x61\x01"),  # wrong declared size
        b"\x83\x50\x00\x00\x00\x01" + zlib.compress(b"\x61\x01"),  # understated size
        b"\x83\x50\x00\x00\x00\x01" + zlib.compress(b"\x01"),  # unknown tag inside
    ],
)
def test_malformed_input_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="malformed term"):
        decode_term(data)


def test_improper_list_message() -> None:
    with pytest.raises(ValueError, match="improper list"):
        decode_term(b"\x83\x6c\x00\x00\x00\x01\x61\x01\x61\x02")


def test_deeply_nested_input_raises_value_error_not_recursion_error() -> None:
    data = b"\x83" + b"\x6c\x00\x00\x00\x01" * 10_000 + b"\x6a" * 10_001
    with pytest.raises(ValueError, match="nested more than"):
        decode_term(data)


def test_compressed_round_trip() -> None:
    raw = encode_term({"a": ["x" * 100] * 10})
    body = raw[1:]
    compressed = b"\x83\x50" + len(body).to_bytes(4, "big") + zlib.compress(body)
    assert decode_term(compressed) == {"a": ["x" * 100] * 10}


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = encode_term([1, "a"])
    assert decode_term(bytearray(raw)) == [1, "a"]
    assert decode_term(memoryview(raw)) == [1, "a"]


def test_decode_old_float_ext() -> None:
    text = b"1.50000000000000000000e+00"
    data = b"\x83\x63" + text + b"\x00" * (31 - len(text))
    assert decode_term(data) == 1.5


def test_decode_latin1_small_atom_ext() -> None:
    assert decode_term(b"\x83\x73\x02ok") == Atom("ok")
    assert decode_term(b"\x83\x73\x04true") is True
