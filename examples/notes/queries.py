"""Every SQL statement of the notes service, once per dialect.

PostgreSQL (asyncpg) numbers its placeholders ``$1``; SQLite accepts ``?1``, the same numbered
form, so each statement takes its arguments in the same order on both databases. The statements
differ only where the dialects do: the id column and the timestamp default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["POSTGRES", "SQLITE", "Queries", "queries_for"]


@dataclass(frozen=True, slots=True)
class Queries:
    """The statements of one dialect. Each returns the columns of :class:`notes.models.Note`."""

    create_table: str
    """Create the ``notes`` table if it does not exist yet."""
    insert: str
    """``(title, body)``: add a note."""
    page: str
    """``(after, limit)``: the notes with an id above ``after``, by id, at most ``limit``."""
    get: str
    """``(id,)``: one note."""
    update: str
    """``(id, title, body)``: change a note; a ``None`` title or body keeps the current one."""
    delete: str
    """``(id,)``: delete a note, returning it."""


_COLUMNS: Final = "id, title, body, created_at"

POSTGRES: Final = Queries(
    create_table="""
        CREATE TABLE IF NOT EXISTS notes (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            title text NOT NULL,
            body text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
    """,
    insert=f"INSERT INTO notes (title, body) VALUES ($1, $2) RETURNING {_COLUMNS}",
    page=f"SELECT {_COLUMNS} FROM notes WHERE id > $1 ORDER BY id LIMIT $2",
    get=f"SELECT {_COLUMNS} FROM notes WHERE id = $1",
    update=f"""
        UPDATE notes SET title = COALESCE($2, title), body = COALESCE($3, body)
        WHERE id = $1 RETURNING {_COLUMNS}
    """,
    delete=f"DELETE FROM notes WHERE id = $1 RETURNING {_COLUMNS}",
)

SQLITE: Final = Queries(
    # AUTOINCREMENT: an id is never reused after a delete, as with PostgreSQL's identity column.
    create_table="""
        CREATE TABLE IF NOT EXISTS notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )
    """,
    insert=f"INSERT INTO notes (title, body) VALUES (?1, ?2) RETURNING {_COLUMNS}",
    page=f"SELECT {_COLUMNS} FROM notes WHERE id > ?1 ORDER BY id LIMIT ?2",
    get=f"SELECT {_COLUMNS} FROM notes WHERE id = ?1",
    update=f"""
        UPDATE notes SET title = COALESCE(?2, title), body = COALESCE(?3, body)
        WHERE id = ?1 RETURNING {_COLUMNS}
    """,
    delete=f"DELETE FROM notes WHERE id = ?1 RETURNING {_COLUMNS}",
)

_BY_SCHEME: Final = {"postgresql": POSTGRES, "postgres": POSTGRES, "sqlite": SQLITE}


def queries_for(database_url: str) -> Queries:
    """The statements for the database at ``database_url``, chosen by its scheme."""
    scheme = database_url.partition("://")[0].lower()
    try:
        return _BY_SCHEME[scheme]
    except KeyError:
        raise ValueError(
            f"the notes service runs on postgresql:// or sqlite:/// URLs, not {scheme}://"
        ) from None
