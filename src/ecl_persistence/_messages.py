"""The first line of a driver's message, with every value it quotes cut out.

Driver messages quote values: asyncpg's "invalid input for query argument
$4: <repr of the value> (<why>)", PostgreSQL's "invalid input syntax for
type uuid: "<value>"" and "value "<value>" is out of range", SQLite's
"Could not decode to UTF-8 column 'error' with text '<value>'". Error
messages of this package are built from what is left.
"""

from __future__ import annotations

import re

__all__ = ["first_line", "raw_first_line"]

_ARGUMENT_ECHO = re.compile(r"(invalid input for query argument \$\d+)\b.*")
_QUOTED_AFTER_COLON = re.compile(r"""(:\s*)["'].*""")
_QUOTED_VALUE = re.compile(r"""\bvalue\s+(?:"[^"]*"|'[^']*')""")
# Everything after it: the stored text runs to the end of the line, quotes and all.
_TEXT_ECHO = re.compile(r"""(\bwith text)\s*["'].*""")
_MAX_CHARS = 300


def raw_first_line(error: BaseException) -> str:
    """The first line of ``error``'s message as it is: parse it, never show it."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, with any value it quotes cut out."""
    line = _ARGUMENT_ECHO.sub(r"\1", raw_first_line(error))
    line = _TEXT_ECHO.sub(r"\1 (value hidden)", line)
    line = _QUOTED_AFTER_COLON.sub(r"\1(value hidden)", line)
    return _QUOTED_VALUE.sub("value (hidden)", line)[:_MAX_CHARS]
