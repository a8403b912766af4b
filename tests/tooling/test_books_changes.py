"""The books change only through their own named steps.

``_books.py`` promises that a reader can list every way the pool's state moves by reading one
class. That holds only if no other module of ``pool/`` changes the books' fields behind its back:
this check reads the code of every other module and fails on any assignment, deletion or
mutating call that reaches a field of the books (``pool._books.idle.pop()``,
``books.opening += 1``, ``del books.in_use[key]``). Reading them is fine. (It does not follow
a field into a local name: the pool keeps one in a local only to read it, on the fast path.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

POOL = Path(__file__).resolve().parents[2] / "pool"
OWNERS = {"_books.py", "_waiters.py"}  # the books themselves, and their line of waiters
MODULES = sorted(module for module in POOL.glob("*.py") if module.name not in OWNERS)

FIELDS = {
    "abandoned",
    "closing",
    "generation",
    "idle",
    "in_use",
    "lent",
    "max_size",
    "min_size",
    "opening",
    "shrinking",
    "waiters",
}
"""Every field of ``Books`` (checked against its ``__slots__`` below)."""

READING = {"get", "values", "items", "keys", "copy", "take", "__len__", "__contains__"}
"""Methods of a field that only read it (``take`` is the await of a waiter in line, the one
change the line makes on its own: a waiter that gives up leaves it)."""


def _is_books(node: ast.expr) -> bool:
    """Whether ``node`` names the books: ``books``, ``self._books`` or ``pool._books``."""
    if isinstance(node, ast.Name):
        return node.id == "books"
    return isinstance(node, ast.Attribute) and node.attr == "_books"


def _books_field(node: ast.AST) -> str | None:
    """The field named by ``node`` if it is ``<books>.<field>``, else None."""
    if isinstance(node, ast.Attribute) and node.attr in FIELDS and _is_books(node.value):
        return node.attr
    return None


def changes_of_the_books(source: str) -> list[tuple[int, str]]:
    """Where ``source`` changes a field of the books: (line, what)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        else:
            targets = []
        for target in targets:
            for part in ast.walk(target):
                inner = part.value if isinstance(part, ast.Subscript) else part
                if (field := _books_field(inner)) is not None:
                    found.append((target.lineno, f"assigns or deletes {field}"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            field = _books_field(node.func.value)
            if field is not None and node.func.attr not in READING:
                found.append((node.lineno, f"calls {field}.{node.func.attr}()"))
    return sorted(set(found))


def test_the_books_never_await() -> None:
    """Each change of the books is one synchronous step: no await, no async function."""
    tree = ast.parse((POOL / "_books.py").read_text(encoding="utf-8"))
    suspending = (ast.Await, ast.AsyncFor, ast.AsyncWith, ast.AsyncFunctionDef)
    assert not [node.lineno for node in ast.walk(tree) if isinstance(node, suspending)]


def test_the_field_list_is_the_books_own() -> None:
    from aiodbpool._books import Books

    assert set(Books.__slots__) == FIELDS


@pytest.mark.parametrize("module", MODULES, ids=[module.name for module in MODULES])
def test_only_the_books_change_the_books(module: Path) -> None:
    changes = changes_of_the_books(module.read_text(encoding="utf-8"))
    where = "; ".join(f"pool/{module.name}:{line} {what}" for line, what in changes)
    assert not changes, f"change the books through a named step of Books: {where}"


def test_the_check_finds_each_kind_of_change() -> None:
    source = """
def f(self, pool, books, record):
    books.opening += 1
    self._books.idle.pop()
    del pool._books.in_use[1]
    books.lent[2] = record
    books.min_size, books.max_size = 1, 2
    books.waiters.offer(record)
    size = len(books.idle) + books.opening  # reading is fine
    record = books.in_use.get(1)
    books.reserve_slots()  # a named step
"""
    assert changes_of_the_books(source) == [
        (3, "assigns or deletes opening"),
        (4, "calls idle.pop()"),
        (5, "assigns or deletes in_use"),
        (6, "assigns or deletes lent"),
        (7, "assigns or deletes max_size"),
        (7, "assigns or deletes min_size"),
        (8, "calls waiters.offer()"),
    ]
