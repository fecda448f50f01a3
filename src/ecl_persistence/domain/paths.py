"""Validation of artifact locations.

An artifact path is later joined to a storage root or handed to an object
store client, so anything that could escape that root is refused: absolute
paths, home directories, Windows drives, backslashes, ``.`` and ``..``
segments (also percent-encoded, once or several times) and ``file://`` URIs.
So are the forms some systems turn into those: Unicode compatibility forms
(fullwidth dots and slash, U+FF0E and U+FF0F, become ``../`` under NFKC),
segments of dots and spaces (Windows drops trailing dots and spaces, so
``.. `` is ``..``), invisible format characters, and percent-encodings that
are not UTF-8 (``%c0%ae`` is an overlong ``.``).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from ecl_persistence.errors import ValidationError

__all__ = ["MAX_ARTIFACT_PATH_LENGTH", "check_artifact_path"]

#: The longest artifact path or URI accepted, in characters.
MAX_ARTIFACT_PATH_LENGTH = 4096

_URI = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)", re.DOTALL)
# Anything that starts like "scheme:" is refused as a relative path: a Windows
# drive ("C:") or a URI without "//" ("file:/etc/passwd", "javascript:...").
_SCHEME_LIKE_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff]")
_MAX_DECODE_ROUNDS = 3


def _fail(reason: str) -> ValidationError:
    return ValidationError(f"path {reason}")


def _unquote(text: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise _fail("must be percent-encoded as UTF-8") from None


def _decoded_forms(text: str) -> list[str]:
    """Return ``text``, each successive percent-decoding of it, and their NFKC forms."""
    forms = [text]
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = _unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    else:
        # A reader that decodes once more than we did could still find a "..".
        if _unquote(forms[-1]) != forms[-1]:
            raise _fail(f"is percent-encoded more than {_MAX_DECODE_ROUNDS} times")
    for form in forms:
        if any(unicodedata.category(char) == "Cf" for char in form):
            raise _fail("must not contain invisible format characters")
    return forms + [unicodedata.normalize("NFKC", form) for form in forms]


def _check_segments(text: str, *, allow_empty_segments: bool) -> None:
    for segment in text.split("/"):
        if segment and not segment.strip(". "):
            raise _fail("must not contain segments of only dots and spaces ('.', '..')")
        if not segment and not allow_empty_segments:
            raise _fail("must not contain empty segments")


def check_artifact_path(path: object) -> str:
    """Check where an artifact is stored, and return the path unchanged.

    Two forms are accepted:

    * a URI ``scheme://rest`` with a lower-case scheme other than ``file``
      and a non-empty rest, such as ``s3://bucket/key.json``;
    * a relative POSIX path such as ``out/report.md``: not starting with
      ``/``, ``~`` or ``scheme:`` (which covers Windows drives like ``C:``),
      and without empty segments (``a//b``).

    In both forms the path must be at most :data:`MAX_ARTIFACT_PATH_LENGTH`
    characters, hold no ASCII control character, backslash or lone surrogate,
    and have no ``.`` or ``..`` segment. These rules also apply to every
    percent-decoding of the path, so ``a/%2e%2e/b`` is refused; a path still
    encoded after three decodings is refused outright.

    Raises:
        ValidationError: The path is not acceptable. The message says why but
            does not repeat the path.

    """
    if not isinstance(path, str):
        raise ValidationError(f"path must be a string, not {type(path).__name__}")
    text = str.__str__(path)
    if not text:
        raise _fail("must not be empty")
    if len(text) > MAX_ARTIFACT_PATH_LENGTH:
        raise _fail(f"must be at most {MAX_ARTIFACT_PATH_LENGTH} characters long")
    uri = _URI.fullmatch(text)
    if uri is not None and len(uri.group(1)) > 1:
        if uri.group(1) == "file":
            raise _fail("must not be a file:// URI")
        if not uri.group(2):
            raise _fail("must have something after the URI scheme")
        for form in _decoded_forms(uri.group(2)):
            if _FORBIDDEN_CHARACTER.search(form) is not None:
                raise _fail("must not contain control characters, backslashes or lone surrogates")
            _check_segments(form, allow_empty_segments=True)
        return text
    for form in _decoded_forms(text):
        if _FORBIDDEN_CHARACTER.search(form) is not None:
            raise _fail("must not contain control characters, backslashes or lone surrogates")
        if form.startswith(("/", "~")):
            raise _fail("must be relative, not absolute or in a home directory")
        if _SCHEME_LIKE_PREFIX.match(form) is not None:
            raise _fail("must be a relative path or a scheme://... URI")
        _check_segments(form, allow_empty_segments=False)
    return text
