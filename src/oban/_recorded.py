"""Encoding of recorded job return values in Erlang's External Term Format.

A worker that returns ``Record(value)`` has ``value`` stored in the job's ``meta`` as
``{"recorded": true, "return": <text>}``, where ``<text>`` is the base64 (standard alphabet,
without ``=`` padding) of the value in the External Term Format (ETF), i.e. what Erlang's
``:erlang.term_to_binary/1`` produces and ``:erlang.binary_to_term/1`` accepts. This keeps
the stored value readable by Elixir Oban and Oban Web.

Python values map to Erlang terms as follows:

=====================  ==========================================
Python                 Erlang
=====================  ==========================================
``None``               ``nil``
``True`` / ``False``   ``true`` / ``false``
``int``                integer (any size)
``float`` (finite)     float
``str``                UTF-8 binary (an Elixir string)
``bytes``/``bytearray`` binary
``list``               list
``tuple``              tuple
``dict``               map
``Atom``               atom
=====================  ==========================================

Decoding is the inverse, with these caveats: binaries decode to ``str`` when they are valid
UTF-8 and to ``bytes`` otherwise (so ``b"abc"`` comes back as ``"abc"``), Erlang charlists
stored as ``STRING_EXT`` decode to a ``list[int]`` as they are in Erlang, and atoms other
than ``nil``/``true``/``false`` decode to :class:`Atom`.

Decoding is bounded, since anyone who can write a job's ``meta`` chooses the text: a term may
not take more than ``max_bytes`` (default :data:`MAX_TERM_BYTES`, 64 MB, uncompressed) nor
hold more than ``max_elements`` terms in all (default :data:`MAX_TERM_ELEMENTS`, one million,
counting every element of every list, tuple, map and charlist). A compressed term's declared
size is checked against that cap and against what its compressed bytes could possibly inflate
to before anything is inflated, and inflation stops at the declared size; a container's
declared length is charged against the element budget when it is read, before its elements
are built. What exceeds a limit raises :class:`TermTooLargeError` (a ``ValueError``), never
``MemoryError``. Pass larger limits to :func:`decode_recorded` or :func:`decode_term`, or set
the module's defaults, to read larger values.
"""

from __future__ import annotations

import base64
import binascii
import math
import reprlib
import struct
import zlib
from typing import Any, NoReturn

__all__ = [
    "MAX_TERM_BYTES",
    "MAX_TERM_ELEMENTS",
    "Atom",
    "TermTooLargeError",
    "decode_recorded",
    "decode_term",
    "encode_recorded",
    "encode_term",
]

VERSION = 131

# Term tags from the External Term Format specification.
COMPRESSED = 80
NEW_FLOAT_EXT = 70
SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
FLOAT_EXT = 99
ATOM_EXT = 100
SMALL_TUPLE_EXT = 104
LARGE_TUPLE_EXT = 105
NIL_EXT = 106
STRING_EXT = 107
LIST_EXT = 108
BINARY_EXT = 109
SMALL_BIG_EXT = 110
LARGE_BIG_EXT = 111
SMALL_ATOM_EXT = 115
MAP_EXT = 116
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119

# Nesting deeper than this is rejected rather than risking a RecursionError.
MAX_DEPTH = 256

# Erlang refuses atoms longer than this many characters (a system_limit error).
MAX_ATOM_CHARACTERS = 255

#: The default cap on a term's uncompressed size, in bytes: 64 MB. ``Record``'s default limit
#: (64,000,000 characters of base64, i.e. 48 MB of term) always fits, with room for values
#: an Elixir worker recorded compressed. Read at each call, so it may be raised.
MAX_TERM_BYTES = 64_000_000
#: The default cap on the number of terms in a decoded value: every element of every list,
#: tuple and charlist, two per map entry, plus one. A one-byte ``[]`` becomes a 64-byte Python
#: list, so this bounds the objects built (about 70 MB at worst) where bytes cannot.
MAX_TERM_ELEMENTS = 1_000_000
# Deflate encodes at most 258 bytes in two bits (1032:1); zlib adds a few bytes of framing.
_MAX_DEFLATE_RATIO = 1032
_DEFLATE_SLACK = 1024

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_F64 = struct.Struct(">d")

_U32_MAX = 0xFFFF_FFFF
_I32_MIN = -(2**31)
_I32_MAX = 2**31 - 1

_short_repr = reprlib.Repr()
_short_repr.maxstring = 40
_short_repr.maxother = 40


class Atom(str):
    """A string that is encoded as an Erlang atom rather than a binary.

    ``Atom("ok")`` is the Elixir atom ``:ok``. Since it subclasses ``str`` it compares and
    hashes like the plain string, so ``decoded[Atom("status")]`` and ``decoded["status"]``
    find the same map entry.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


class _EncodeError(Exception):
    """Internal error carrying the path to the offending value while the stack unwinds."""

    def __init__(self, error: type[Exception], detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        # Path segments, innermost first (appended while unwinding).
        self.segments: list[str] = []

    def relative_path(self) -> str:
        return "".join(reversed(self.segments))


def _type_name(value: Any) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _a_type(value: Any) -> str:
    name = _type_name(value)
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name}"


def _encode_atom(name: str, out: bytearray) -> None:
    if len(name) > MAX_ATOM_CHARACTERS:
        raise _EncodeError(
            ValueError,
            f"is an atom of {len(name)} characters, but Erlang atoms are limited to "
            f"{MAX_ATOM_CHARACTERS}",
        )
    raw = name.encode("utf-8")
    size = len(raw)
    if size < 256:
        out.append(SMALL_ATOM_UTF8_EXT)
        out.append(size)
    elif size <= 0xFFFF:
        out.append(ATOM_UTF8_EXT)
        out += _U16.pack(size)
    else:
        # Unreachable: 255 characters are at most 1020 UTF-8 bytes.
        raise _EncodeError(ValueError, f"is an atom of {size} bytes, which is too long to record")
    out += raw


def _encode_int(value: int, out: bytearray) -> None:
    if 0 <= value <= 255:
        out.append(SMALL_INTEGER_EXT)
        out.append(value)
    elif _I32_MIN <= value <= _I32_MAX:
        out.append(INTEGER_EXT)
        out += _I32.pack(value)
    else:
        magnitude = -value if value < 0 else value
        size = (magnitude.bit_length() + 7) // 8
        if size <= 255:
            out.append(SMALL_BIG_EXT)
            out.append(size)
        elif size <= _U32_MAX:
            out.append(LARGE_BIG_EXT)
            out += _U32.pack(size)
        else:  # pragma: no cover - would need a multi-gigabyte integer
            raise _EncodeError(ValueError, "is an integer too large to record")
        out.append(1 if value < 0 else 0)
        out += magnitude.to_bytes(size, "little")


def _encode_binary(raw: bytes | bytearray, out: bytearray) -> None:
    size = len(raw)
    if size > _U32_MAX:  # pragma: no cover - would need a 4 GiB value
        raise _EncodeError(ValueError, f"is {size} bytes long, which is too large to record")
    out.append(BINARY_EXT)
    out += _U32.pack(size)
    out += raw


def _encode(value: Any, out: bytearray, active: set[int], depth: int) -> None:
    # Order matters: bool is a subclass of int, and Atom a subclass of str.
    if value is None:
        out += b"\x77\x03nil"
    elif value is True:
        out += b"\x77\x04true"
    elif value is False:
        out += b"\x77\x05false"
    elif isinstance(value, Atom):
        _encode_atom(value, out)
    elif isinstance(value, str):
        _encode_binary(value.encode("utf-8"), out)
    elif isinstance(value, int):
        _encode_int(value, out)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _EncodeError(ValueError, f"is the float {value!r}, which Erlang cannot represent")
        out.append(NEW_FLOAT_EXT)
        out += _F64.pack(value)
    elif isinstance(value, bytes | bytearray):
        _encode_binary(value, out)
    elif isinstance(value, list | tuple | dict):
        _encode_container(value, out, active, depth)
    else:
        raise _EncodeError(TypeError, f"is {_a_type(value)}, which cannot be recorded")


def _encode_container(
    value: list[Any] | tuple[Any, ...] | dict[Any, Any],
    out: bytearray,
    active: set[int],
    depth: int,
) -> None:
    if depth >= MAX_DEPTH:
        raise _EncodeError(
            ValueError, f"is nested more than {MAX_DEPTH} levels deep, which cannot be recorded"
        )
    ident = id(value)
    if ident in active:
        raise _EncodeError(
            ValueError,
            f"is a reference back to a containing {_type_name(value)} (a cycle), "
            "which cannot be recorded",
        )
    size = len(value)
    if size > _U32_MAX:  # pragma: no cover - would need billions of elements
        raise _EncodeError(ValueError, f"has {size} elements, which is too many to record")

    active.add(ident)
    try:
        if isinstance(value, dict):
            out.append(MAP_EXT)
            out += _U32.pack(size)
            for key, item in value.items():
                try:
                    _encode(key, out, active, depth + 1)
                except _EncodeError as error:
                    inner = error.relative_path()
                    if inner:
                        error.detail = (
                            f"has a key {_short_repr.repr(key)} whose {inner} {error.detail}"
                        )
                    else:
                        error.detail = f"has a key that {error.detail}"
                    error.segments.clear()
                    raise
                try:
                    _encode(item, out, active, depth + 1)
                except _EncodeError as error:
                    error.segments.append(f"[{_short_repr.repr(key)}]")
                    raise
        else:
            if isinstance(value, tuple):
                if size <= 255:
                    out.append(SMALL_TUPLE_EXT)
                    out.append(size)
                else:
                    out.append(LARGE_TUPLE_EXT)
                    out += _U32.pack(size)
            elif size == 0:
                out.append(NIL_EXT)
                return
            else:
                out.append(LIST_EXT)
                out += _U32.pack(size)
            for index, item in enumerate(value):
                try:
                    _encode(item, out, active, depth + 1)
                except _EncodeError as error:
                    error.segments.append(f"[{index}]")
                    raise
            if isinstance(value, list):
                out.append(NIL_EXT)
    finally:
        active.discard(ident)


def encode_term(value: Any) -> bytes:
    """Encode ``value`` in Erlang's External Term Format.

    The result starts with the version byte 131 and is accepted by ``binary_to_term/1``.
    ``None``, ``True`` and ``False`` become the atoms ``nil``, ``true`` and ``false``;
    ``str`` becomes a UTF-8 binary; ``list``, ``tuple`` and ``dict`` become lists, tuples
    and maps (encoded recursively); :class:`Atom` becomes an atom.

    Raises:
        TypeError: if ``value`` contains a type that cannot be represented (a set, a
            datetime, an arbitrary object...). The message names the type and its path,
            e.g. ``value['items'][2] is a set, which cannot be recorded``.
        ValueError: if ``value`` is representable in type but not in value: a non-finite
            float, a container that contains itself, or nesting deeper than ``MAX_DEPTH``.
    """
    out = bytearray([VERSION])
    try:
        _encode(value, out, set(), 0)
    except _EncodeError as error:
        raise error.error(f"value{error.relative_path()} {error.detail}") from None
    return bytes(out)


def encode_recorded(value: Any) -> str:
    """Encode ``value`` for a job's ``meta["return"]``.

    Returns the standard base64 of :func:`encode_term` with the ``=`` padding stripped, as
    Oban does. Raises the same errors as :func:`encode_term`.
    """
    return base64.b64encode(encode_term(value)).decode("ascii").rstrip("=")


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class TermTooLargeError(ValueError):
    """A term exceeds a decoding limit (``max_bytes`` or ``max_elements``): it was refused
    before the memory it asks for was spent."""


class _Reader:
    __slots__ = ("budget", "data", "max_elements", "pos")

    def __init__(self, data: bytes, max_elements: int) -> None:
        self.data = data
        self.pos = 0
        self.max_elements = max_elements
        # The top-level term counts too.
        self.budget = max_elements - 1

    def fail(self, message: str) -> NoReturn:
        raise ValueError(f"malformed term at byte {self.pos}: {message}")

    def take(self, size: int) -> bytes:
        start = self.pos
        end = start + size
        if end > len(self.data):
            self.fail(f"expected {size} more bytes but only {len(self.data) - start} remain")
        self.pos = end
        return self.data[start:end]

    def u8(self) -> int:
        if self.pos >= len(self.data):
            self.fail("unexpected end of data")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def count(self, size: int, min_item_bytes: int, elements: int | None = None) -> int:
        """Check that ``size`` items could fit in the remaining data, and charge them (or
        ``elements``) to the element budget, before looping."""
        if size * min_item_bytes > len(self.data) - self.pos:
            self.fail(f"declares {size} elements but only {len(self.data) - self.pos} bytes remain")
        self.charge(size if elements is None else elements)
        return size

    def charge(self, elements: int) -> None:
        self.budget -= elements
        if self.budget < 0:
            raise TermTooLargeError(
                f"recorded value is too large to decode: it holds more than "
                f"{self.max_elements:,} terms (max_elements={self.max_elements})"
            )


def _atom(reader: _Reader, raw: bytes, encoding: str) -> Any:
    try:
        name = raw.decode(encoding)
    except UnicodeDecodeError:
        reader.fail("atom is not valid UTF-8")
    if name == "nil":
        return None
    if name == "true":
        return True
    if name == "false":
        return False
    return Atom(name)


def _decode(reader: _Reader, depth: int) -> Any:
    tag = reader.u8()

    if tag == SMALL_INTEGER_EXT:
        return reader.u8()
    if tag == INTEGER_EXT:
        return _I32.unpack(reader.take(4))[0]
    if tag == NEW_FLOAT_EXT:
        number: float = _F64.unpack(reader.take(8))[0]
        if not math.isfinite(number):
            reader.fail("float is not finite")
        return number
    if tag == FLOAT_EXT:
        text = reader.take(31).split(b"\x00", 1)[0]
        try:
            number = float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            reader.fail("invalid FLOAT_EXT text")
        if not math.isfinite(number):
            reader.fail("float is not finite")
        return number
    if tag == BINARY_EXT:
        raw = reader.take(reader.u32())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if tag == SMALL_ATOM_UTF8_EXT:
        return _atom(reader, reader.take(reader.u8()), "utf-8")
    if tag == ATOM_UTF8_EXT:
        return _atom(reader, reader.take(reader.u16()), "utf-8")
    if tag == SMALL_ATOM_EXT:
        return _atom(reader, reader.take(reader.u8()), "latin-1")
    if tag == ATOM_EXT:
        return _atom(reader, reader.take(reader.u16()), "latin-1")
    if tag in (SMALL_BIG_EXT, LARGE_BIG_EXT):
        size = reader.u8() if tag == SMALL_BIG_EXT else reader.u32()
        sign = reader.u8()
        if sign > 1:
            reader.fail(f"invalid bignum sign byte {sign}")
        magnitude = int.from_bytes(reader.take(size), "little")
        return -magnitude if sign else magnitude
    if tag == NIL_EXT:
        return []
    if tag == STRING_EXT:
        size = reader.u16()
        reader.count(size, 1)
        return list(reader.take(size))

    # Containers from here on.
    if depth >= MAX_DEPTH:
        reader.fail(f"terms nested more than {MAX_DEPTH} levels deep are not supported")

    if tag == LIST_EXT:
        size = reader.count(reader.u32(), 1)
        items = [_decode(reader, depth + 1) for _ in range(size)]
        if reader.u8() != NIL_EXT:
            reader.pos -= 1
            reader.fail("improper lists (with a tail other than []) are not supported")
        return items
    if tag in (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT):
        arity = reader.u8() if tag == SMALL_TUPLE_EXT else reader.u32()
        reader.count(arity, 1)
        return tuple(_decode(reader, depth + 1) for _ in range(arity))
    if tag == MAP_EXT:
        size = reader.u32()
        reader.count(size, 2, elements=2 * size)
        result: dict[Any, Any] = {}
        for _ in range(size):
            key_pos = reader.pos
            key = _decode(reader, depth + 1)
            try:
                duplicate = key in result
            except TypeError:
                reader.pos = key_pos
                reader.fail(f"map key of Python type {type(key).__name__} is not hashable")
            if duplicate:
                reader.pos = key_pos
                reader.fail(f"map key {_short_repr.repr(key)} is duplicated in Python")
            result[key] = _decode(reader, depth + 1)
        return result

    reader.pos -= 1
    reader.fail(f"unsupported term tag {tag}")


def _decompress(data: memoryview, max_bytes: int) -> bytes:
    # data is everything after the COMPRESSED tag: a 4-byte size then a zlib stream.
    if len(data) < 4:
        raise ValueError("malformed term: truncated compressed term header")
    (size,) = _U32.unpack(data[:4])
    # The header is checked before a byte is inflated: against the cap, and against what
    # the compressed bytes could hold at deflate's best ratio.
    if size > max_bytes:
        raise TermTooLargeError(
            f"recorded value is too large to decode: its compressed term declares {size} "
            f"bytes, over the limit of {max_bytes} (max_bytes)"
        )
    stream = data[4:]
    if size > len(stream) * _MAX_DEFLATE_RATIO + _DEFLATE_SLACK:
        raise ValueError(
            f"malformed term: {len(stream)} compressed bytes cannot inflate to the {size} "
            "bytes its header declares"
        )
    inflater = zlib.decompressobj()
    try:
        # Never inflate more than was declared (+1 to detect a lying header).
        raw = inflater.decompress(stream, size + 1)
    except zlib.error as error:
        raise ValueError(f"malformed term: invalid compressed data ({error})") from None
    if len(raw) != size or not inflater.eof or inflater.unused_data:
        raise ValueError("malformed term: compressed data does not match its declared size")
    return raw


def _limit(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def decode_term(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int | None = None,
    max_elements: int | None = None,
) -> Any:
    """Decode Erlang External Term Format bytes (the inverse of :func:`encode_term`).

    Besides what :func:`encode_term` produces this accepts the other common encodings
    Erlang emits: latin-1 atoms (``ATOM_EXT``, ``SMALL_ATOM_EXT``), charlists
    (``STRING_EXT``, decoded to ``list[int]`` as in Erlang), the old ``FLOAT_EXT`` and
    zlib-compressed terms (``term_to_binary(T, [compressed])``).

    Atoms ``nil``, ``true`` and ``false`` decode to ``None``, ``True`` and ``False``, other
    atoms to :class:`Atom`. Binaries decode to ``str`` when valid UTF-8, else ``bytes``.

    ``max_bytes`` (default :data:`MAX_TERM_BYTES`) caps the term's size, uncompressed;
    ``max_elements`` (default :data:`MAX_TERM_ELEMENTS`) the number of terms in it.

    Raises:
        TermTooLargeError: the term exceeds ``max_bytes`` or ``max_elements`` (a
            ``ValueError``; raised before the memory is spent).
        ValueError: if the data is malformed (missing version byte, truncated, unknown or
            unsupported tag, improper list, trailing bytes, a compressed size that does not
            match the data) or cannot be represented in Python (unhashable or colliding map
            keys, such as ``1`` and ``1.0``).
    """
    limit = _limit("max_bytes", max_bytes, MAX_TERM_BYTES)
    elements = _limit("max_elements", max_elements, MAX_TERM_ELEMENTS)
    raw = data if isinstance(data, bytes) else bytes(data)
    if not raw or raw[0] != VERSION:
        raise ValueError(f"malformed term: expected version byte {VERSION}")
    try:
        if len(raw) > 1 and raw[1] == COMPRESSED:
            reader = _Reader(_decompress(memoryview(raw)[2:], limit), elements)
        else:
            if len(raw) > limit:
                raise TermTooLargeError(
                    f"recorded value is too large to decode: its term is {len(raw)} bytes, "
                    f"over the limit of {limit} (max_bytes)"
                )
            reader = _Reader(raw, elements)
            reader.pos = 1
        value = _decode(reader, 0)
    except (MemoryError, RecursionError) as error:
        # Within the limits there is no reason for either; a clear error all the same.
        raise TermTooLargeError(
            f"recorded value is too large to decode ({type(error).__name__})"
        ) from None
    if reader.pos != len(reader.data):
        reader.fail(f"{len(reader.data) - reader.pos} unexpected trailing bytes")
    return value


def decode_recorded(
    text: str, *, max_bytes: int | None = None, max_elements: int | None = None
) -> Any:
    """Decode a job's ``meta["return"]`` text written by :func:`encode_recorded` or Oban.

    The base64 padding may be present or stripped. Raises ``ValueError`` if the text is not
    valid base64 or does not hold a valid term, :class:`TermTooLargeError` (a ``ValueError``)
    if the term exceeds ``max_bytes`` or ``max_elements`` (see :func:`decode_term`).
    """
    limit = _limit("max_bytes", max_bytes, MAX_TERM_BYTES)
    # Text longer than the base64 of any term within the cap is refused before it is
    # decoded (zlib may grow incompressible data a little, hence the allowance).
    if len(text) > (limit + limit // 1000 + 64) * 4 // 3 + 4:
        raise TermTooLargeError(
            f"recorded value is too large to decode: its text is {len(text)} characters, "
            f"over what a term of {limit} bytes takes (max_bytes)"
        )
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        # binascii reads an ASCII str in place (base64.b64decode would copy it to bytes).
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"recorded value is not valid base64: {error}") from None
    return decode_term(raw, max_bytes=limit, max_elements=max_elements)
