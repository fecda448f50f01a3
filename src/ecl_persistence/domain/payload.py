"""Validation and encoding of JSON payloads and of plain text fields.

Payloads come from workflow code and end up in JSON columns, so everything that
PostgreSQL ``jsonb``, SQLite or a strict JSON reader would refuse is refused
here first: NaN and infinities, NUL characters, lone surrogates, non-string
keys, integers beyond 64 bits, deep nesting and oversized documents. So is
``-0.0``: PostgreSQL's ``jsonb`` keeps numbers as ``numeric``, which has no
negative zero, and would give it back as ``0.0`` where SQLite keeps it.

Error messages name the field and the reason, never the value or any part of
it, because payloads may hold secrets and messages end up in logs.
"""

from __future__ import annotations

import enum
import json
import math
import re
from typing import TYPE_CHECKING, Final, TypeAlias

from ecl_persistence.errors import SerializationError, ValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MIN_JSON_INT",
    "MISSING",
    "JsonValue",
    "Missing",
    "check_json",
    "check_text",
    "decode_json",
    "encode_json",
    "load_json",
]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
"""A value that can be stored as JSON: what inputs, outputs and metadata hold."""


class Missing(enum.Enum):
    """Marks "no value" (for example a step that has no output yet).

    This is distinct from JSON ``null``, which is Python ``None``.
    """

    MISSING = "MISSING"


#: The single :class:`Missing` value.
MISSING: Final = Missing.MISSING

#: The deepest nesting of lists and objects accepted; a scalar has depth 0.
MAX_JSON_DEPTH = 64
#: The largest encoded size of one payload accepted, in UTF-8 bytes.
DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
#: The largest integer accepted: integers must fit in a signed 64-bit column.
MAX_JSON_INT = 2**63 - 1
#: The smallest integer accepted.
MIN_JSON_INT = -(2**63)

# Marks the end of an iterator on the walk stack; no payload can hold it.
_END = object()

_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Each character of a string encodes to at most 6 bytes: a "\u001f" escape, or
# 4 UTF-8 bytes for a character outside the BMP.
_MAX_BYTES_PER_CHAR = 6


def _string_problem(text: str) -> str | None:
    """Return why ``text`` cannot be stored, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character"
    # A pure-ASCII string cannot hold a surrogate, and the check is much cheaper.
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return "contains a lone surrogate"
    return None


def _fail(field: str, reason: str) -> SerializationError:
    return SerializationError(f"{field}: payload {reason}")


def check_json(
    value: object, *, field: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> JsonValue:
    """Check that ``value`` can be stored as JSON, and return it unchanged.

    Accepted are ``None``, ``bool``, ``int`` from :data:`MIN_JSON_INT` to
    :data:`MAX_JSON_INT`, finite ``float`` other than ``-0.0``, ``str`` without NUL or
    lone surrogates, and ``list`` and ``dict`` (with ``str`` keys) of those, nested
    at most :data:`MAX_JSON_DEPTH` deep, encoding to at most ``max_bytes``
    UTF-8 bytes with :func:`encode_json`.

    The types must match exactly: subclasses (an ``IntEnum``, a ``StrEnum``, an
    ``OrderedDict``) are rejected, because ``json`` would encode them in ways
    that do not survive a round trip. ``bool`` is accepted as itself. Tuples,
    sets, bytes, datetimes and ``Decimal`` are rejected too: convert them
    before storing them. A cyclic structure is rejected by the depth limit.

    Memory and time stay bounded by ``max_bytes``: a huge string, list or
    integer is rejected before it is encoded.

    Raises:
        SerializationError: The value cannot be stored. The message names
            ``field`` and the reason but holds no part of the value.

    """
    size = 0  # a lower bound of the encoded size
    worst = 0  # an upper bound of the encoded size
    # A stack of iterators, one per open list or object, instead of recursion:
    # deep input cannot hit RecursionError, and memory grows with the depth,
    # not with the number of items.
    stack: list[Iterator[object]] = [iter((value,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
            continue
        if item is None or type(item) is bool:
            cost = 4 if item is None or item is True else 5
        elif type(item) is int:
            # Compared as numbers: converting a huge int to text is slow, and
            # Python refuses it beyond 4300 digits anyway.
            if not MIN_JSON_INT <= item <= MAX_JSON_INT:
                raise _fail(field, "holds an integer outside the signed 64-bit range")
            cost = len(int.__repr__(item))
        elif type(item) is float:
            if not math.isfinite(item):
                raise _fail(field, "holds NaN or an infinite float")
            if item == 0.0 and math.copysign(1.0, item) < 0:
                raise _fail(
                    field, "holds -0.0, which PostgreSQL's jsonb reads back as 0.0: store 0.0"
                )
            cost = len(_float_text(item))
        elif type(item) is str:
            size, worst = _add_string(item, size, worst, field, max_bytes, "string")
            continue
        elif type(item) is list or type(item) is dict:
            # len(stack) is this container's nesting level: the root iterator
            # plus one per enclosing container.
            if len(stack) > MAX_JSON_DEPTH:
                raise _fail(field, f"is nested deeper than {MAX_JSON_DEPTH} levels (or is cyclic)")
            # Brackets and commas, and for an object one colon per member.
            cost = 2 + max(len(item) - 1, 0) + (len(item) if type(item) is dict else 0)
            if size + cost > max_bytes:
                raise _fail(field, f"is larger than {max_bytes} bytes")
            if type(item) is dict:
                for key in item:
                    if type(key) is not str:
                        raise _fail(field, "has an object key that is not a string")
                    size, worst = _add_string(key, size, worst, field, max_bytes, "object key")
                stack.append(iter(item.values()))
            else:
                stack.append(iter(item))
        else:
            raise _fail(field, f"holds a value of type {type(item).__name__}, which is not JSON")
        size += cost
        worst += cost
        if size > max_bytes:
            raise _fail(field, f"is larger than {max_bytes} bytes")
    checked: JsonValue = value  # type: ignore[assignment]  # the walk above proved the type
    if worst > max_bytes and len(encode_json(checked).encode("utf-8")) > max_bytes:
        raise _fail(field, f"is larger than {max_bytes} bytes")
    return checked


def _add_string(
    text: str, size: int, worst: int, field: str, max_bytes: int, what: str
) -> tuple[int, int]:
    """Check one string and return the size bounds with it added."""
    # Characters never outnumber encoded bytes, so this rejects a huge string
    # before anything scans or copies it.
    size += len(text) + 2
    if size > max_bytes:
        raise _fail(field, f"is larger than {max_bytes} bytes")
    problem = _string_problem(text)
    if problem is not None:
        raise _fail(field, f"has a {what} that {problem}")
    return size, worst + _MAX_BYTES_PER_CHAR * len(text) + 2


def encode_json(value: JsonValue) -> str:
    """Encode ``value`` as compact JSON text, keeping non-ASCII characters as is.

    This does not apply the checks of :func:`check_json`; call that first.

    Raises:
        SerializationError: ``json`` cannot encode the value (NaN, a non-JSON
            type, a cycle, too deep). The message holds no part of the value.

    """
    try:
        text = _encode(value)
        if "e+" in text and _has_large_float(value):
            return "".join(_encode_exact(value, []))
        return text
    except (ValueError, TypeError, RecursionError) as exc:
        # "from None": the original message may quote the value.
        raise SerializationError(f"cannot encode payload as JSON ({type(exc).__name__})") from None


_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def _fast_encoder() -> Callable[[object], str]:
    """``_ENCODER.encode`` without building a new C encoder on every call, as ``encode`` does.

    Without cycle detection: a cyclic value recurses until RecursionError,
    which encode_json reports like any other value it cannot encode.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return _ENCODER.encode
    chunks = make(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    return lambda value: "".join(chunks(value, 0))


_encode = _fast_encoder()

# From this magnitude ``repr`` writes a float with an exponent (``1e+16``), and
# PostgreSQL's jsonb, which keeps numbers as ``numeric``, gives it back without
# one, as an integer. Written out in full with a ".0", it comes back a float.
_EXPONENT_FLOAT = 1e16


def _has_large_float(value: JsonValue) -> bool:
    stack: list[JsonValue] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and abs(item) >= _EXPONENT_FLOAT:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _float_text(value: float) -> str:
    """The JSON text of a finite float, as :func:`encode_json` writes it."""
    return f"{value:.1f}" if abs(value) >= _EXPONENT_FLOAT else float.__repr__(value)


def _encode_exact(value: JsonValue, parts: list[str]) -> list[str]:
    """Encode like :func:`encode_json`, writing large floats without an exponent."""
    if isinstance(value, float):
        parts.append(_float_text(value))
    elif isinstance(value, dict):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            parts.append("," if index else "")
            parts.append(json.dumps(key, ensure_ascii=False))
            parts.append(":")
            _encode_exact(item, parts)
        parts.append("}")
    elif isinstance(value, list):
        parts.append("[")
        for index, item in enumerate(value):
            parts.append("," if index else "")
            _encode_exact(item, parts)
        parts.append("]")
    else:
        parts.append(json.dumps(value, ensure_ascii=False))
    return parts


def _reject_constant(name: str) -> JsonValue:
    raise SerializationError("cannot decode JSON: NaN and Infinity are not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # A literal such as 1e999 overflows to infinity.
        raise _fail("payload", "holds NaN or an infinite float")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not MIN_JSON_INT <= value <= MAX_JSON_INT:
        raise _fail("payload", "holds an integer outside the signed 64-bit range")
    return value


# Made once: json.loads with any keyword builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_CHECKING_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_int64
)
# Up to this length, the text of a document that decoded with _CHECKING_DECODER
# and holds no \u escape re-encodes within DEFAULT_MAX_PAYLOAD_BYTES: a number
# grows at most about a hundredfold (``1e300`` is written out in full), and
# every other token keeps its length.
_TRUSTED_LENGTH = DEFAULT_MAX_PAYLOAD_BYTES // 128


def _decode(text: str | bytes, decoder: json.JSONDecoder) -> JsonValue:
    try:
        if not isinstance(text, str):
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        result: JsonValue = decoder.decode(text)
    except SerializationError:
        raise
    except json.JSONDecodeError as exc:
        # "from None" here and below: the original exception keeps the whole
        # document in its attributes, and tracebacks would print its message.
        where = f"line {exc.lineno} column {exc.colno}"
        raise SerializationError(f"cannot decode JSON: {exc.msg} at {where}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise SerializationError(f"cannot decode JSON ({type(exc).__name__})") from None
    return result


def decode_json(text: str | bytes) -> JsonValue:
    """Decode JSON text, refusing the ``NaN`` and ``Infinity`` literals.

    Raises:
        SerializationError: ``text`` is not valid JSON. The message holds no
            part of the text.

    """
    return _decode(text, _DECODER)


def load_json(text: str) -> JsonValue:
    r"""Decode JSON text into a value that :func:`check_json` accepts (with the default limit).

    This is how stored payloads are read back: numbers are checked as they
    are decoded, and the full walk of :func:`check_json` runs only when the
    text could hold something else it refuses (a ``\u`` escape, which
    may be a NUL or a lone surrogate; deep nesting; a very long document).

    Raises:
        SerializationError: ``text`` is not valid JSON, or holds a value
            :func:`check_json` refuses. The message holds no part of the text.

    """
    value = _decode(text, _CHECKING_DECODER)
    if (
        len(text) > _TRUSTED_LENGTH
        or "\\u" in text
        or (len(text) > 2 * MAX_JSON_DEPTH and text.count("[") + text.count("{") > MAX_JSON_DEPTH)
    ):
        check_json(value, field="payload")
    return value


def check_text(value: object, *, field: str, max_length: int, allow_empty: bool = False) -> str:
    """Check a plain text field (an id, a name, an error message) and return it.

    The value must be a ``str`` of at most ``max_length`` characters, without
    NUL or lone surrogates, and not empty unless ``allow_empty``. A ``str``
    subclass (such as a ``StrEnum`` member) is accepted and returned as a
    plain ``str`` with the same characters.

    Raises:
        ValidationError: The value is not acceptable. The message names
            ``field`` but holds no part of the value.

    """
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, not {type(value).__name__}")
    text = str.__str__(value)
    if not text and not allow_empty:
        raise ValidationError(f"{field} must not be empty")
    if len(text) > max_length:
        raise ValidationError(f"{field} must be at most {max_length} characters long")
    problem = _string_problem(text)
    if problem is not None:
        raise ValidationError(f"{field} {problem}")
    return text
