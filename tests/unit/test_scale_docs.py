"""The configuration snippet of docs/scaling.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def test_the_scaling_page_configuration_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(PAGE), "exec"), namespace)
    config = namespace["config"]
    assert getattr(config, "pgbouncer") is True  # noqa: B009
    assert getattr(config, "replica_async_url").host == "replica.internal"  # noqa: B009
