"""Fail unless every name in ``ecl_persistence.__all__`` is in the built API reference.

Usage: ``python docs/check_reference.py site/objects.inv``. The inventory is
the one mkdocstrings writes: a Sphinx version 2 inventory, zlib-compressed
after four header lines, one object per line, its name first.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import ecl_persistence


def documented_names(inventory: Path) -> set[str]:
    """The object names an ``objects.inv`` lists."""
    header_lines = 4
    parts = inventory.read_bytes().split(b"\n", header_lines)
    body = zlib.decompress(parts[header_lines]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line}


def main(inventory: str) -> int:
    """Print the public names missing from the reference; return 1 if any."""
    names = documented_names(Path(inventory))
    missing = [name for name in ecl_persistence.__all__ if f"ecl_persistence.{name}" not in names]
    for name in missing:
        print(f"ecl_persistence.{name} is not in the API reference", file=sys.stderr)
    total = len(ecl_persistence.__all__)
    print(f"{total - len(missing)} of {total} public names are in the API reference")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
