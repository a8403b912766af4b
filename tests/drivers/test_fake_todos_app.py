"""An app written against aiosqlite runs its tests unchanged on the fake driver and on SQLite.

``apps/todos_aiosqlite.py`` is a small service written for aiosqlite alone (cursors awaited and
entered, ``rowcount`` and ``lastrowid``, ``execute_fetchall``, ``executemany``, ``aiosqlite.Row``,
``commit`` and ``rollback``). Every test below runs twice: on ``fake://?api=aiosqlite&strict=1``,
where ``TodosModel``, an in-memory model of the app's table, answers the statements; and on a
SQLite file of the test's own. The tests see only the app's pool.
"""

from __future__ import annotations

import copy
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from apps import todos_aiosqlite as app

from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeDriver, FakeResult

FAKE_URL = "fake://?api=aiosqlite&strict=1"

Args = tuple[object, ...]


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


class TodosModel:
    """The app's table in memory, answering each statement the app sends; ``BEGIN`` keeps a
    copy of it, which ``ROLLBACK`` puts back. Ids are SQLite's: one more than the largest."""

    def __init__(self) -> None:
        self.todos: dict[int, app.Todo] = {}
        self.snapshot: dict[int, app.Todo] | None = None

    def script(self, driver: FakeDriver[Any]) -> None:
        driver.script(re.compile(r"^\s*CREATE TABLE IF NOT EXISTS todos \("), [])
        driver.script("INSERT INTO todos (title) VALUES (?)", self.insert)
        driver.script("SELECT id, title, done FROM todos WHERE id = ?", self.by_id)
        driver.script("SELECT id, title, done FROM todos WHERE done = 0 ORDER BY id", self.not_done)
        driver.script("SELECT title FROM todos ORDER BY title", self.titles)
        driver.script("UPDATE todos SET done = 1 WHERE id = ?", self.complete)
        driver.script("DELETE FROM todos WHERE done = :done", self.delete_done)
        driver.script("BEGIN", self.begin)
        driver.script("COMMIT", self.commit)
        driver.script("ROLLBACK", self.rollback)

    def insert(self, sql: str, args: Args) -> FakeResult | Exception:
        (title,) = args
        assert isinstance(title, str)
        if any(todo.title == title for todo in self.todos.values()):
            return sqlite3.IntegrityError("UNIQUE constraint failed: todos.title")
        todo_id = max(self.todos, default=0) + 1
        self.todos[todo_id] = app.Todo(todo_id, title, False)
        return FakeResult(rowcount=1, lastrowid=todo_id)

    def by_id(self, sql: str, args: Args) -> FakeResult:
        todo = self.todos.get(_int(args[0]))
        return self._rows([] if todo is None else [todo])

    def not_done(self, sql: str, args: Args) -> FakeResult:
        return self._rows([todo for _, todo in sorted(self.todos.items()) if not todo.done])

    def titles(self, sql: str, args: Args) -> FakeResult:
        titles = sorted(todo.title for todo in self.todos.values())
        return FakeResult([(title,) for title in titles], columns=["title"])

    def complete(self, sql: str, args: Args) -> FakeResult:
        todo = self.todos.get(_int(args[0]))
        if todo is None:
            return FakeResult(rowcount=0)
        self.todos[todo.id] = app.Todo(todo.id, todo.title, True)
        return FakeResult(rowcount=1)

    def delete_done(self, sql: str, args: Args) -> FakeResult:
        assert args == ({"done": 1},)  # named parameters come as one mapping
        done = [todo_id for todo_id, todo in self.todos.items() if todo.done]
        for todo_id in done:
            del self.todos[todo_id]
        return FakeResult(rowcount=len(done))

    def begin(self, sql: str, args: Args) -> list[Args]:
        self.snapshot = copy.deepcopy(self.todos)
        return []

    def commit(self, sql: str, args: Args) -> list[Args]:
        self.snapshot = None
        return []

    def rollback(self, sql: str, args: Args) -> list[Args]:
        assert self.snapshot is not None
        self.todos, self.snapshot = self.snapshot, None
        return []

    @staticmethod
    def _rows(todos: list[app.Todo]) -> FakeResult:
        rows = [(todo.id, todo.title, int(todo.done)) for todo in todos]
        return FakeResult(rows, columns=["id", "title", "done"])


@pytest.fixture(params=["fake", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the app's data lives: the strict fake, or a SQLite file of the test's own."""
    if request.param == "fake":
        return FAKE_URL
    return f"sqlite:///{tmp_path / 'todos.db'}"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool[aiosqlite.Connection]]:
    """The app's pool, open, with the app's table in place (scripted into the fake)."""
    pool = app.make_pool(database_url)
    if isinstance(pool.driver, FakeDriver):
        TodosModel().script(pool.driver)
    async with pool:
        await app.create_schema(pool)
        yield pool


# -- the app's tests: the same on both ---------------------------------------------------------


async def test_a_todo_reads_back_as_added(pool: Pool[aiosqlite.Connection]) -> None:
    todo_id = await app.add(pool, "write tests")
    assert await app.get(pool, todo_id) == app.Todo(todo_id, "write tests", False)
    assert await app.get(pool, todo_id + 1000) is None


async def test_completed_todos_leave_the_pending_list(pool: Pool[aiosqlite.Connection]) -> None:
    first = await app.add(pool, "first")
    second = await app.add(pool, "second")
    assert await app.complete(pool, first)
    assert not await app.complete(pool, second + 1000)
    assert await app.pending(pool) == [app.Todo(second, "second", False)]


async def test_titles_are_sorted(pool: Pool[aiosqlite.Connection]) -> None:
    for title in ("pears", "apples", "figs"):
        await app.add(pool, title)
    assert await app.titles(pool) == ["apples", "figs", "pears"]


async def test_clearing_deletes_only_what_is_done(pool: Pool[aiosqlite.Connection]) -> None:
    ids = [await app.add(pool, title) for title in ("a", "b", "c")]
    await app.complete(pool, ids[0])
    await app.complete(pool, ids[2])
    assert await app.clear_done(pool) == 2
    assert await app.titles(pool) == ["b"]


async def test_add_all_adds_everything_or_nothing(pool: Pool[aiosqlite.Connection]) -> None:
    await app.add(pool, "b")
    assert await app.add_all(pool, ["a", "c"])
    assert not await app.add_all(pool, ["d", "b", "e"])  # "b" is there: "d" is rolled back
    assert await app.titles(pool) == ["a", "b", "c"]
