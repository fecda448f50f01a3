"""Opaque keyset cursors: the sort key of the last row of a page, encoded."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from ecl_persistence.errors import ValidationError

__all__ = ["decode_cursor", "encode_cursor"]

_PREFIX = "c1."
_MAX_LENGTH = 200


def encode_cursor(created_at: datetime, id: uuid.UUID) -> str:
    """Encode the position after the row with this ``created_at`` and ``id``."""
    payload = json.dumps([created_at.isoformat(), id.hex], separators=(",", ":"))
    return _PREFIX + base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Decode a cursor made by :func:`encode_cursor`; raise ValidationError for anything else."""
    if not isinstance(cursor, str) or len(cursor) > _MAX_LENGTH or not cursor.startswith(_PREFIX):
        raise ValidationError("cursor is not one this package issued")
    body = cursor[len(_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        created_text, id_hex = json.loads(raw)
        created_at = datetime.fromisoformat(created_text)
        row_id = uuid.UUID(hex=id_hex)
    except (binascii.Error, ValueError, TypeError, AttributeError):
        raise ValidationError("cursor is not one this package issued") from None
    if created_at.tzinfo is None:
        raise ValidationError("cursor is not one this package issued")
    return created_at, row_id
