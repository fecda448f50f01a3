"""Opaque keyset cursors: the sort key of the last row of a page, encoded and checksummed.

The checksum catches a cursor that was edited or damaged on its way back. It
is not a secret: a cursor only names a position in a listing the caller may
read anyway, so forging one grants nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from datetime import datetime

from ecl_persistence.errors import ValidationError

__all__ = ["decode_cursor", "encode_cursor"]

_PREFIX = "c1."
_MAX_LENGTH = 200
_DIGEST_BYTES = 8


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST_BYTES, person=b"ecl-cursor").digest()


def encode_cursor(created_at: datetime, id: uuid.UUID) -> str:
    """Encode the position after the row with this ``created_at`` and ``id``."""
    body = json.dumps([created_at.isoformat(), id.hex], separators=(",", ":")).encode()
    token = base64.urlsafe_b64encode(_digest(body) + body).decode().rstrip("=")
    return _PREFIX + token


def _refuse() -> ValidationError:
    return ValidationError("cursor is not one this package issued")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Decode a cursor made by :func:`encode_cursor`; raise ValidationError for anything else."""
    if not isinstance(cursor, str) or len(cursor) > _MAX_LENGTH or not cursor.startswith(_PREFIX):
        raise _refuse()
    token = cursor[len(_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _refuse() from None
    digest, body = raw[:_DIGEST_BYTES], raw[_DIGEST_BYTES:]
    # A re-encoding must give the same text, so no two cursors mean one position.
    if not hmac.compare_digest(digest, _digest(body)) or (
        base64.urlsafe_b64encode(raw).decode().rstrip("=") != token
    ):
        raise _refuse()
    try:
        created_text, id_hex = json.loads(body)
        created_at = datetime.fromisoformat(created_text)
        row_id = uuid.UUID(hex=id_hex)
    except (ValueError, TypeError, AttributeError):
        raise _refuse() from None
    if created_at.tzinfo is None:
        raise _refuse()
    return created_at, row_id
