"""Artifact paths that could escape their storage root are refused; nothing is written.

The basic forms (``..``, NUL, absolute paths, ``file://``, percent-encoding)
are listed in tests/unit/test_domain.py; these are the disguised ones.
"""

from __future__ import annotations

import attrs
import pytest
from tests.factories import ArtifactFactory, persist_workflow, statements_run
from tests.reliability._support import row_counts

from ecl_persistence import Artifact, Database, ValidationError
from ecl_persistence.domain import check_artifact_path

DISGUISED = [
    # Unicode forms that NFKC normalisation turns into "..", "/" or a drive.
    "\uff0e\uff0e/etc/passwd",  # fullwidth full stops
    "a/\uff0e\uff0e/b",
    "\uff0fetc/passwd",  # fullwidth solidus
    "a/\u2025/b",  # two dot leader
    "\u2024\u2024/x",  # one dot leader, twice
    "C\uff1a/x",  # fullwidth colon: "C:/x"
    "s3://bucket/\uff0e\uff0e/x",
    "a/%ef%bc%8e%ef%bc%8e/b",  # fullwidth stops, percent-encoded
    # Segments Windows reads as "." or "..": it drops trailing dots and spaces.
    "a/.. /b",
    "a/. /b",
    "a/.../b",
    "a/..../b",
    "a/ ../b",
    # Invisible characters that make a ".." or a name look like something else.
    "a/\u200b../b",
    "a/..\u200b/b",
    "a/report\u202egpj.exe",
    "a/%e2%80%8b../b",
    # Percent-encodings that are not UTF-8: "%c0%ae" is an overlong ".".
    "a/%c0%ae%c0%ae/b",
    "%c0%af..%c0%afetc",
    # Absolute-path tricks.
    "//server/share/x",
    "/./etc/passwd",
    "%2F..%2Fetc",
    "%2fetc/passwd",
    "\\\\?\\C:\\x",
    "..%5c..%5cwindows",
    "a%00.json",
    "file:..",
    "FILE://host/etc",
]


@pytest.mark.parametrize("path", DISGUISED)
def test_disguised_escaping_path_is_refused_without_echoing_it(path: str) -> None:
    with pytest.raises(ValidationError, match=r"^path") as caught:
        check_artifact_path(path)
    assert path not in str(caught.value)


@pytest.mark.parametrize(
    "path",
    ["résumé/ﬁle.txt", "数据/报告.json", "a/notes….txt", "s3://bucket/ü/x.json", "a/50%25/b"],
)
def test_ordinary_unicode_paths_are_still_accepted(path: str) -> None:
    assert check_artifact_path(path) == path


async def test_no_escaping_path_reaches_the_database(db: Database) -> None:
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
    valid = ArtifactFactory.build(workflow_id=workflow.id)
    with statements_run(db) as statements:
        async with db.session() as uow:
            for path in [*DISGUISED, "../x", "/etc/passwd", "a/\x00/b", "file:///etc/passwd"]:
                with pytest.raises(ValidationError):
                    attrs.evolve(valid, path=path)
                with pytest.raises(ValidationError):
                    Artifact.new(workflow.id, "s", "n", path=path, size_bytes=1)
    assert statements == []
    assert (await row_counts(db))["artifacts"] == 0
