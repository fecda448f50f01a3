"""Keyset cursors: only the exact text this package issued names a position."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from tests.factories import CURSOR_RESPELLINGS, at, cursor_bytes

from ecl_persistence import ValidationError
from ecl_persistence.repositories._cursor import decode_cursor, encode_cursor

# Microseconds in the timestamp leave the encoded cursor a partial last base64
# group: its last character has unused bits, and it could carry padding.
POSITION = (at(seconds=2.5), uuid.UUID(int=7))


def test_decode_cursor_returns_the_position_encode_cursor_encoded() -> None:
    assert decode_cursor(encode_cursor(*POSITION)) == POSITION


@pytest.mark.parametrize(
    "respell", CURSOR_RESPELLINGS.values(), ids=list(CURSOR_RESPELLINGS.keys())
)
def test_decode_cursor_refuses_another_base64_spelling_of_the_same_bytes(
    respell: Callable[[str], str],
) -> None:
    cursor = encode_cursor(*POSITION)
    respelled = respell(cursor)
    assert respelled != cursor
    # The checksum inside still matches: only the canonical-text check tells them apart.
    assert cursor_bytes(respelled) == cursor_bytes(cursor)
    with pytest.raises(ValidationError, match="cursor"):
        decode_cursor(respelled)
