"""Payloads stored once: their canonical text, its hash, and the compressed bytes stored.

A payload above the inline limit is stored in the ``payloads`` table under
the SHA-256 of its canonical JSON text (keys sorted, compact, UTF-8),
compressed with zstd, and the row that holds it keeps only that hash. What
goes wrong reading one back names the payload by its hash, never its content.
"""

from __future__ import annotations

import hashlib
import json

import attrs
import zstandard

from ecl_persistence.domain import JsonValue, encode_json, load_json
from ecl_persistence.errors import SerializationError

__all__ = [
    "CODEC",
    "HASH_LENGTH",
    "EncodedPayload",
    "StoredPayload",
    "decode_stored",
    "encode_payload",
]

CODEC = "zstd"
"""The codec of the payloads this version writes."""
HASH_LENGTH = 64
"""Hex digits of a payload's SHA-256."""
_LEVEL = 3
# Sorted keys, so that two documents that differ only in key order are one payload.
_CANONICAL = json.JSONEncoder(
    allow_nan=False, ensure_ascii=False, separators=(",", ":"), sort_keys=True
)
_COMPRESSOR = zstandard.ZstdCompressor(level=_LEVEL)
_DECOMPRESSOR = zstandard.ZstdDecompressor()


@attrs.frozen
class EncodedPayload:
    """A payload ready to store: its hash, the compressed bytes and the size of its text."""

    hash: str
    data: bytes
    raw_size: int


@attrs.frozen
class StoredPayload:
    """A payload read back from the ``payloads`` table, by its hash."""

    hash: str
    value: JsonValue = attrs.field(repr=False)


def canonical_text(value: JsonValue) -> bytes:
    """The canonical JSON text of a checked ``value``, as UTF-8."""
    text = _CANONICAL.encode(value)
    if "e+" in text:
        # A float json would print in exponent form: the package's exact encoding.
        text = encode_json(value)
    return text.encode("utf-8")


def encode_payload(text: bytes) -> EncodedPayload:
    """Hash and compress the canonical text of a payload."""
    return EncodedPayload(
        hash=hashlib.sha256(text).hexdigest(),
        data=_COMPRESSOR.compress(text),
        raw_size=len(text),
    )


def decode_stored(hash: str, codec: str, data: bytes) -> JsonValue:
    """The value of a stored payload; SerializationError naming it (by hash) if it is damaged."""
    if codec != CODEC:
        raise SerializationError(f"payload {hash} has an unknown codec")
    try:
        text = _DECOMPRESSOR.decompress(data)
    except zstandard.ZstdError:
        raise SerializationError(
            f"payload {hash} is corrupt: its bytes do not decompress"
        ) from None
    if hashlib.sha256(text).hexdigest() != hash:
        raise SerializationError(f"payload {hash} is corrupt: its content does not match its hash")
    try:
        return load_json(text.decode("utf-8"))
    except (UnicodeDecodeError, SerializationError):
        raise SerializationError(f"payload {hash} is corrupt: it is not JSON") from None
