"""The notification payload format, below both the notifier and the engines.

Payloads are JSON objects, sent as Elixir Oban 2.23 sends them (plain JSON up to 512 bytes,
else ``Z:`` + base64 of the gzipped JSON) and read in all three forms nodes have sent. Every
payload is untrusted input (any database login may NOTIFY, any writer of a SQLite file may add
signal rows): decoding is bounded in size, and control signals may be signed with a shared
secret (``notifier={"secret": ...}``) so that a Python-only cluster refuses anyone else's.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import time
import zlib
from typing import Any

import orjson

#: JSON longer than this is sent compressed, as Elixir Oban 2.23 does (notifier.ex encode/1).
COMPRESS_THRESHOLD = 512
#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more, so a longer one is not a
#: notification any node sent: it is dropped unread.
MAX_PAYLOAD_BYTES = 8000
#: A compressed payload may not inflate beyond this (a gzip bomb fits in 8000 bytes; what the
#: nodes send on insert, signal and leader inflates to a few KB at most).
MAX_DECODED_BYTES = 64 * 1024


class PayloadError(ValueError):
    """A notification payload that is too large or not a JSON object; it is dropped."""


def encode_payload(message: dict[str, Any]) -> str:
    """A payload as Elixir Oban 2.23 sends it: JSON up to 512 bytes, else ``Z:`` + base64 of
    the gzipped JSON.

    >>> encode_payload({"action": "pause", "queue": "a"})
    '{"action":"pause","queue":"a"}'
    """
    data = orjson.dumps(message)
    if len(data) <= COMPRESS_THRESHOLD:
        return data.decode()
    return "Z:" + base64.b64encode(gzip.compress(data)).decode()


def decode_payload(payload: str) -> dict[str, Any]:
    """The JSON object in ``payload``: plain JSON, ``Z:`` + base64 gzip (Oban 2.23), or bare
    base64 gzip (older Oban nodes and older oban-py, recognised by ``H4sI``, the base64 of
    gzip's magic bytes).

    Raises:
        PayloadError: the payload is above :data:`MAX_PAYLOAD_BYTES`, inflates beyond
            :data:`MAX_DECODED_BYTES`, is not valid base64, gzip or JSON, or is not an object.

    >>> decode_payload('{"action": "resume", "queue": "a"}')
    {'action': 'resume', 'queue': 'a'}
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        raw = payload.encode()
    except UnicodeEncodeError as error:
        raise PayloadError(f"payload is not UTF-8: {error}") from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload longer than {MAX_PAYLOAD_BYTES} bytes")
    if payload.startswith("Z:"):
        data = _gunzip(payload[2:])
    elif payload.startswith("H4sI"):
        data = _gunzip(payload)
    else:
        data = raw
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise PayloadError(f"payload is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise PayloadError(f"payload is not a JSON object: {payload[:100]!r}")
    return message


def _gunzip(text: str) -> bytes:
    try:
        compressed = base64.b64decode(text, validate=True)
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
        data = inflater.decompress(compressed, MAX_DECODED_BYTES + 1)
    except (ValueError, zlib.error) as error:
        raise PayloadError(f"payload is not base64 gzip: {error}") from None
    if len(data) > MAX_DECODED_BYTES:
        raise PayloadError(f"payload inflates beyond {MAX_DECODED_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise PayloadError("payload is not one complete gzip stream")
    return data


#: The field a signed signal carries its signature in, and the one with its signing time.
SIGNATURE = "sig"
SIGNED_AT = "sig_at"
#: A signed signal older (or newer) than this many seconds is refused: a replay of one that a
#: listener captured works only within this window.
SIGNATURE_MAX_AGE = 60.0


def _digest(message: dict[str, Any], secret: str) -> str:
    body = {k: v for k, v in message.items() if k != SIGNATURE}
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def sign(message: dict[str, Any], secret: str) -> dict[str, Any]:
    """``message`` with a signing time and an HMAC-SHA256 signature over both."""
    signed = {**message, SIGNED_AT: round(time.time(), 3)}
    signed[SIGNATURE] = _digest(signed, secret)
    return signed


def verify(message: dict[str, Any], secret: str) -> str | None:
    """Why ``message`` is not a valid signed signal for ``secret``; ``None`` if it is."""
    signature = message.get(SIGNATURE)
    if not isinstance(signature, str):
        return "unsigned"
    if not hmac.compare_digest(signature, _digest(message, secret)):
        return "bad signature"
    at = message.get(SIGNED_AT)
    if isinstance(at, bool) or not isinstance(at, int | float):
        return "no signing time"
    if abs(time.time() - at) > SIGNATURE_MAX_AGE:
        return "signed too long ago"
    return None
