"""A to-do list, written against aiosqlite's API alone.

Nothing here knows about the fake driver: the service takes a database URL, makes its pool with
``aiodbpool.create_pool`` and uses the connections as aiosqlite's -- ``execute`` awaited or
entered with ``async with``, cursors fetched from and iterated, ``rowcount`` and ``lastrowid``,
``execute_fetchall``, ``executemany``, rows read by name through ``aiosqlite.Row``, and a
transaction begun with ``BEGIN`` and ended with ``commit`` or ``rollback``. Its tests
(tests/drivers/test_fake_todos_app.py) run on ``fake://?api=aiosqlite&strict=1`` and on a SQLite
file, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from aiodbpool import Pool, create_pool

SCHEMA = """
    CREATE TABLE IF NOT EXISTS todos (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL UNIQUE,
        done INTEGER NOT NULL DEFAULT 0
    )
"""


@dataclass(frozen=True)
class Todo:
    id: int
    title: str
    done: bool


def make_pool(url: str) -> Pool[aiosqlite.Connection]:
    """The service's pool, for a ``sqlite://`` URL (or any URL of a driver speaking aiosqlite's
    API)."""
    pool: Pool[aiosqlite.Connection] = create_pool(url, name="todos", max_size=2)
    return pool


async def create_schema(pool: Pool[aiosqlite.Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)


async def add(pool: Pool[aiosqlite.Connection], title: str) -> int:
    """Add a to-do; return its id."""
    async with pool.acquire() as conn:
        cursor = await conn.execute("INSERT INTO todos (title) VALUES (?)", (title,))
        await conn.commit()
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def add_all(pool: Pool[aiosqlite.Connection], titles: list[str]) -> bool:
    """Add every title, or none if one of them is there already; say which happened."""
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        try:
            await conn.executemany(
                "INSERT INTO todos (title) VALUES (?)", [(title,) for title in titles]
            )
        except aiosqlite.IntegrityError:
            await conn.rollback()
            return False
        await conn.commit()
        return True


async def get(pool: Pool[aiosqlite.Connection], todo_id: int) -> Todo | None:
    async with pool.acquire() as conn:
        conn.row_factory = aiosqlite.Row
        async with conn.execute(
            "SELECT id, title, done FROM todos WHERE id = ?", (todo_id,)
        ) as cursor:
            row = await cursor.fetchone()
    if row is None:
        return None
    return Todo(row["id"], row["title"], bool(row["done"]))


async def pending(pool: Pool[aiosqlite.Connection]) -> list[Todo]:
    """The to-dos not done yet, oldest first."""
    async with pool.acquire() as conn:
        conn.row_factory = aiosqlite.Row
        rows = await conn.execute_fetchall(
            """
            SELECT id, title, done
            FROM todos
            WHERE done = 0
            ORDER BY id
            """
        )
    return [Todo(row["id"], row["title"], bool(row["done"])) for row in rows]


async def titles(pool: Pool[aiosqlite.Connection]) -> list[str]:
    """Every title, in alphabetical order."""
    async with pool.acquire() as conn:
        conn.row_factory = None
        async with conn.execute("SELECT title FROM todos ORDER BY title") as cursor:
            return [title async for (title,) in cursor]


async def complete(pool: Pool[aiosqlite.Connection], todo_id: int) -> bool:
    """Mark a to-do done; False if there is none with this id."""
    async with pool.acquire() as conn:
        cursor = await conn.execute("UPDATE todos SET done = 1 WHERE id = ?", (todo_id,))
        await conn.commit()
    return cursor.rowcount == 1


async def clear_done(pool: Pool[aiosqlite.Connection]) -> int:
    """Delete the to-dos done; return how many there were."""
    async with pool.acquire() as conn:
        cursor = await conn.execute("DELETE FROM todos WHERE done = :done", {"done": 1})
        await conn.commit()
    return cursor.rowcount
