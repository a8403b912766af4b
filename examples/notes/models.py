"""What the notes API accepts and returns. Invalid input is answered with 422 by FastAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_ID", "Note", "NoteCreate", "NotePage", "NoteUpdate"]

MAX_ID: Final = 2**63 - 1
"""The largest id either database stores (a 64-bit integer): larger ones are refused with 422."""

Title = Annotated[str, Field(min_length=1, max_length=200)]
Body = Annotated[str, Field(max_length=10_000)]


class NoteCreate(BaseModel):
    """A new note."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    body: Body = ""


class NoteUpdate(BaseModel):
    """Changes to a note: the fields given replace the current ones."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    body: Body | None = None


class Note(BaseModel):
    """A stored note."""

    id: int
    title: str
    body: str
    created_at: datetime


class NotePage(BaseModel):
    """One page of notes, by id."""

    items: list[Note]
    next_after: int | None
    """Pass as ``after`` to get the next page; ``None`` on the last page."""
