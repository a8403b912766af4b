"""Run a statement on a pooled connection of either database, and get rows as dicts.

The pool lends each request a stand-in for the database client's own connection, an
``asyncpg.Connection`` or an ``aiosqlite.Connection``: ``isinstance`` holds and every method
works, until the request gives it back. These few functions are all the service needs from either.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import aiosqlite
import asyncpg

__all__ = ["Connection", "Row", "execute", "fetch_all", "fetch_one"]

Connection: TypeAlias = asyncpg.Connection | aiosqlite.Connection
Row: TypeAlias = dict[str, Any]


async def fetch_all(conn: Connection, sql: str, *args: object) -> list[Row]:
    """The rows of ``sql``, each a dict keyed by column name."""
    if isinstance(conn, aiosqlite.Connection):
        # Column names come from the cursor: the connection's row_factory belongs to the pool's
        # set-up, not to one request.
        async with conn.execute(sql, args) as cursor:
            rows = await cursor.fetchall()
            names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in rows]
    return [dict(record.items()) for record in await conn.fetch(sql, *args)]


async def fetch_one(conn: Connection, sql: str, *args: object) -> Row | None:
    """The first row of ``sql``, or ``None`` if it returns none."""
    rows = await fetch_all(conn, sql, *args)
    return rows[0] if rows else None


async def execute(conn: Connection, sql: str, *args: object) -> None:
    """Run ``sql`` for its effect."""
    if isinstance(conn, aiosqlite.Connection):
        async with conn.execute(sql, args):
            pass
    else:
        await conn.execute(sql, *args)
