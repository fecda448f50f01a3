"""The ``ecl-db`` command: migrate the database, run a demo workflow, look at what is stored.

It needs the ``cli`` extra (click and rich): ``pip install 'ecl-persistence[cli]'``.
Importing :mod:`ecl_persistence` never imports this package, so the library
stays light; this module itself imports click and rich only when :func:`main`
runs, so a missing extra gives one line of advice instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["MISSING_EXTRA_MESSAGE", "main"]

MISSING_EXTRA_MESSAGE = "the ecl-db command needs the cli extra: pip install 'ecl-persistence[cli]'"
"""What ``ecl-db`` prints, exiting with status 2, when click or rich is not installed."""

_EXTRA_MODULES = frozenset({"click", "rich"})


def main(args: Sequence[str] | None = None) -> None:
    """Run ``ecl-db`` with ``args`` (default: the command line) and exit with its status."""
    try:
        from ecl_persistence.cli.app import cli
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in _EXTRA_MODULES:
            raise
        print(MISSING_EXTRA_MESSAGE, file=sys.stderr)
        raise SystemExit(2) from None
    cli.main(args=None if args is None else list(args), prog_name="ecl-db")
