"""Every cancellation point in ``pool/`` says what a cancellation there leaves behind.

A task can be cancelled at each ``await``, ``async with`` and ``async for``; a reader of the pool
must be able to see, at each one, why that is safe. So each carries a ``# cancel:`` comment, at the
end of its line or in the comment lines right above it (see "How we write aiodbpool", point 13).
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

POOL = Path(__file__).resolve().parents[2] / "pool"
MODULES = sorted(POOL.glob("*.py"))


def uncommented_cancellation_points(source: str) -> list[int]:
    """The line numbers of the awaits in ``source`` that carry no ``# cancel:`` comment."""
    comments = {
        token.start[0]: token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    missing = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Await | ast.AsyncWith | ast.AsyncFor):
            continue
        explained = comments.get(node.lineno, "").startswith("# cancel:")
        above = node.lineno - 1  # walk up the block of comment lines just above, if any
        while not explained and above >= 1 and lines[above - 1].lstrip().startswith("#"):
            explained = lines[above - 1].lstrip().startswith("# cancel:")
            above -= 1
        if not explained:
            missing.append(node.lineno)
    return sorted(missing)


@pytest.mark.parametrize("module", MODULES, ids=[module.name for module in MODULES])
def test_every_cancellation_point_says_what_it_leaves_behind(module: Path) -> None:
    missing = uncommented_cancellation_points(module.read_text(encoding="utf-8"))
    where = ", ".join(f"pool/{module.name}:{line}" for line in missing)
    assert not missing, f"add a '# cancel:' comment saying what a cancellation leaves: {where}"


def test_the_check_finds_each_kind_of_cancellation_point() -> None:
    source = """
async def f(lock, items):
    await g()  # cancel: nothing held yet
    # Some context first.
    # cancel: the lock is released by its own __aexit__
    async with lock:
        pass
    async for item in items:
        await g()
    x = 1  # cancel: a comment on a line without an await changes nothing
    await g()
"""
    assert uncommented_cancellation_points(source) == [8, 9, 11]


def test_the_pool_modules_are_found() -> None:
    # (A wrong path would leave nothing to parametrize over: the check would pass unseen.)
    assert POOL / "_pool.py" in MODULES
