"""A griffe extension for the API reference: the docstrings' ``>>>`` examples as code blocks.

mkdocstrings renders the text of a docstring as Markdown, where a line that starts with ``>`` is
a blockquote. griffe reads ``>>>`` lines as examples only inside a Google-style ``Examples:``
section; elsewhere -- where our docstrings put them, as doctest and ``help()`` readers expect
-- each ``>>>`` line became three nested quotes, and its output quoted text. This extension,
which ``mkdocs.yml`` gives to mkdocstrings, wraps each such example in a ```pycon fence before
the docstring is parsed: a ``>>>`` line at the start of a line, with the lines that follow it up
to the next blank line (its ``...`` continuations and its expected output, as doctest reads
them). Lines inside fences, and indented ones (an ``Examples:`` section's, which griffe renders
already), are left as they are. The doctests themselves run in tests/tooling/test_docs_examples.py.
"""

from __future__ import annotations

from typing import Any

import griffe

__all__ = ["DoctestFences", "fence_doctests"]


def fence_doctests(text: str) -> str:
    """``text`` with each of its ``>>>`` examples, outside fences, inside a ```pycon fence."""
    lines: list[str] = []
    in_fence = in_example = False
    for line in text.split("\n"):
        if in_example:
            if line.strip():
                lines.append(line)
                continue
            lines.append("```")
            in_example = False
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and line.startswith(">>>"):
            if lines and lines[-1].strip():
                lines.append("")  # a fence starts a block of its own
            lines.append("```pycon")
            in_example = True
        lines.append(line)
    if in_example:
        lines.append("```")
    return "\n".join(lines)


class DoctestFences(griffe.Extension):
    """Fence the ``>>>`` examples of every docstring of a package griffe has loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _fence(pkg)


def _fence(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = fence_doctests(obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:  # an alias's target is fenced where it is defined
            assert isinstance(member, griffe.Object)
            _fence(member)
