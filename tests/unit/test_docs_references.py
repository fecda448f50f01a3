"""Every test a documentation page names as proof exists, so the proofs cannot rot."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A file (``tests/x/test_y.py``), optionally with ``::test_name``, or a bare
# ``::test_name`` that belongs to the file named last before it.
_REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?|::(\w+)")


def _tests_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def _references() -> list[tuple[str, str, str | None]]:
    """(page, test file, test name or None) for every reference in the docs."""
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            current: str | None = None
            for match in _REFERENCE.finditer(line):
                file, name, bare = match.groups()
                if file is not None:
                    current = file
                    found.append((page.name, file, name))
                elif current is not None:
                    found.append((page.name, current, bare))
    return found


def test_the_docs_name_tests_as_proof() -> None:
    # The check below would pass on pages that name no test at all.
    assert len(_references()) > 50


def test_every_test_the_docs_name_exists() -> None:
    missing = []
    tests_of: dict[str, set[str]] = {}
    for page, file, name in _references():
        path = ROOT / file
        if not path.is_file():
            missing.append(f"{page}: {file}")
            continue
        names = tests_of.setdefault(file, _tests_of(path))
        if name is not None and name not in names:
            missing.append(f"{page}: {file}::{name}")
    assert missing == []
