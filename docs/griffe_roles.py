"""A griffe extension: the Sphinx habits of our docstrings, rendered by mkdocstrings.

The docstrings say :class:`~ecl_persistence.errors.DbError` or :meth:`dispose`,
which read well in the code and in ``help()``. For the site, each role becomes
an optional cross-reference to the object it names, resolved from where the
docstring sits; a name that resolves to nothing stays plain code. Constants
documented by ``#:`` comments above them get those comments as docstrings.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Docstring, Extension, Object

ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`(?P<tilde>~?)(?P<name>[\w.]+)`")
LITERAL_BLOCK = re.compile(r"::$", re.MULTILINE)


def _resolve(obj: Object, dotted: str) -> str | None:
    """The full path of ``dotted`` seen from ``obj``: its own members, then each parent's."""
    if dotted.startswith("ecl_persistence."):
        return dotted
    head, _, rest = dotted.partition(".")
    scope: Any = obj
    while scope is not None:
        member = scope.members.get(head) if hasattr(scope, "members") else None
        if member is not None:
            path = member.target_path if member.is_alias else member.path
            return f"{path}.{rest}" if rest else str(path)
        scope = scope.parent
    return None


def _comment_docstring(obj: Object) -> Docstring | None:
    """The ``#:`` comment lines right above an attribute, as its docstring."""
    if not obj.is_attribute or obj.lineno is None or obj.filepath is None:
        return None
    lines = obj.lines_collection[obj.filepath]  # type: ignore[index]
    comment: list[str] = []
    number = obj.lineno - 1  # the line above, 1-based
    while number >= 1 and lines[number - 1].lstrip().startswith("#:"):
        comment.insert(0, lines[number - 1].lstrip()[2:].strip())
        number -= 1
    if not comment:
        return None
    return Docstring(" ".join(comment), lineno=number + 1, parent=obj)


class SphinxRoles(Extension):
    """Rewrite ``:role:`name``` into links, ``::`` into ``:``, and read ``#:`` comments."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        """Rewrite the docstring of every object once the tree is complete."""
        if obj.docstring is None:
            obj.docstring = _comment_docstring(obj)
        if obj.docstring is None:
            return

        def link(match: re.Match[str]) -> str:
            name = match["name"]
            shown = name.rsplit(".", 1)[-1] if match["tilde"] else name
            target = _resolve(obj, name)
            if target is None:
                return f"`{shown}`"
            return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'

        text = ROLE.sub(link, obj.docstring.value)
        obj.docstring.value = LITERAL_BLOCK.sub(":", text)
