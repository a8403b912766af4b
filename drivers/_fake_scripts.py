"""How the fake driver answers a statement: the scripts a test gives, and how they are matched.

A test scripts what the "database" answers (``FakeDriver.script``):

* **By text.** ``script("SELECT id, title FROM notes WHERE id = $1", rows)``. Texts are compared
  after ``normalize``: outside quoted literals and identifiers, whitespace does not count (nor
  whether there is any between a word and a symbol, as in ``count(*)`` and ``count( * )``), and
  neither do trailing semicolons. So re-wrapping or re-indenting a statement in the application
  does not change what it gets, while any other change (a column, a literal, the case of a
  keyword) does; a strict driver then names the scripted statement it came closest to.
* **By pattern.** ``script(re.compile(r"^SELECT .* FROM notes"), rows)``: ``Pattern.search`` on the
  statement as sent.
* **By function.** ``script(answer)``: ``answer(sql, args)`` returns the answer, or None for a
  statement it does not answer. A function may keep state: a list that an ``INSERT`` appends to
  and a ``SELECT`` reads. A text or a pattern may also be answered by such a function.

An answer is rows (tuples, or dicts whose keys name the columns), a ``FakeResult`` (rows with
column names and the counts some APIs report), or an exception to raise. Text scripts are tried
first; then patterns and functions, the most recent first.

A statement that nothing answers gets no rows, or, from a strict driver, raises
``UnscriptedStatementError`` naming the scripted statements closest to it -- so that a test
notices a statement it did not expect instead of going on with empty results. Transaction
control (``BEGIN``, ``COMMIT``, ``SAVEPOINT``...) needs no script even then.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, TypeAlias

from aiodbpool.drivers._fake_base import Row, UnscriptedStatementError

# Shared with the fake's other modules; FakeResult is re-exported by aiodbpool.drivers.fake.
__all__ = [
    "Answer",
    "NO_ROWS",
    "FakeResult",
    "Responder",
    "Scripts",
    "Statement",
    "column_names",
    "is_transaction_control",
    "normalize",
    "transaction_change",
]

Rows: TypeAlias = "Iterable[Sequence[object] | Mapping[str, object]]"
"""Rows as a test writes them: tuples (or other sequences), or dicts keyed by column name."""

Answer: TypeAlias = "FakeResult | Rows | Exception"
"""What a script answers: rows, a ``FakeResult``, or an exception to raise."""

Responder: TypeAlias = "Callable[[str, Row], Answer | None]"
"""A function answering a statement from its SQL and arguments; None when it does not."""

Statement: TypeAlias = "str | re.Pattern[str] | Responder"
"""What a script matches: a statement's text, a pattern, or a function answering it."""

UNNAMED: Final = "?column?"
"""The name of a column the script did not name (PostgreSQL's name for an unnamed column)."""


class FakeResult:
    """What a statement returns: rows, their column names, and the counts some APIs report.

    Scripts may answer with plain rows; a ``FakeResult`` says more:

    ``rows``
        Tuples (or other sequences), or dicts whose keys name the columns (the same keys in
        every dict).
    ``columns``
        The column names, for tuple rows (or for no rows at all: aiosqlite's
        ``cursor.description`` still names them). Unnamed columns are called ``?column?``.
    ``rowcount``
        How many rows the statement changed (an ``UPDATE`` or ``DELETE`` without ``RETURNING``
        returns no rows, yet changes some). Default: the number of rows returned. asyncpg's
        status (``"UPDATE 3"``) and aiosqlite's ``cursor.rowcount`` report it.
    ``lastrowid``
        aiosqlite's ``cursor.lastrowid`` after an ``INSERT``.
    ``status``
        asyncpg's status string, when the one derived from the statement and ``rowcount``
        (``"INSERT 0 1"``, ``"SELECT 2"``, ``"CREATE TABLE"``...) is not the right one.
    """

    __slots__ = ("columns", "lastrowid", "rowcount", "rows", "status")

    rows: tuple[Row, ...]
    columns: tuple[str, ...] | None
    rowcount: int | None
    lastrowid: int | None
    status: str | None

    def __init__(
        self,
        rows: Rows = (),
        *,
        columns: Iterable[str] | None = None,
        rowcount: int | None = None,
        lastrowid: int | None = None,
        status: str | None = None,
    ) -> None:
        self.rows, self.columns = _rows_and_columns(rows, columns)
        if rowcount is not None and (isinstance(rowcount, bool) or not isinstance(rowcount, int)):
            raise TypeError(f"rowcount must be an int or None, got {type(rowcount).__name__}")
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.status = status

    @property
    def count(self) -> int:
        """``rowcount``, or the number of rows when it was not given."""
        return len(self.rows) if self.rowcount is None else self.rowcount

    def __repr__(self) -> str:
        extras = "".join(
            f", {name}={value!r}"
            for name in ("columns", "rowcount", "lastrowid", "status")
            if (value := getattr(self, name)) is not None
        )
        return f"FakeResult({list(self.rows)!r}{extras})"


def column_names(result: FakeResult, width: int) -> tuple[str, ...]:
    """The names of the columns of a row of ``result`` that is ``width`` values wide."""
    if result.columns is not None:
        return result.columns
    return (UNNAMED,) * width


def _rows_and_columns(
    rows: Rows, columns: Iterable[str] | None
) -> tuple[tuple[Row, ...], tuple[str, ...] | None]:
    """Rows as tuples, and the column names (given, or the keys of dict rows); raise for rows of
    another shape, naming the row at fault."""
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise TypeError(
            f"rows must be a list of tuples or of dicts, got {type(rows).__name__}: "
            "script [(1, 'a')] or [{'id': 1, 'name': 'a'}]"
        )
    given = list(rows)
    names = None if columns is None else tuple(columns)
    if names is None:
        names = next((tuple(row) for row in given if isinstance(row, Mapping)), None)
    if names is not None and not all(isinstance(name, str) for name in names):
        raise TypeError(
            f"column names must be strings, got {names!r}: name the columns with str, in "
            "columns= or as the keys of dict rows"
        )
    result: list[Row] = []
    for number, row in enumerate(given, 1):
        if isinstance(row, Mapping):
            assert names is not None  # named by the first dict row at the latest
            if len(row) != len(names) or set(row) != set(names):
                raise ValueError(
                    f"row {number} has the columns {tuple(row)!r}, not {names!r}: every dict "
                    "row of an answer must have the same keys"
                )
            result.append(tuple(row[name] for name in names))
        elif isinstance(row, Sequence) and not isinstance(row, str | bytes):
            if names is not None and len(row) != len(names):
                raise ValueError(
                    f"row {number} has {len(row)} values for the columns {names!r}: give one "
                    "value per column"
                )
            result.append(tuple(row))
        else:
            raise TypeError(
                f"row {number} is a {type(row).__name__}: a row is a tuple of values, or a "
                "dict of them by column name"
            )
    return tuple(result), names


NO_ROWS: Final = FakeResult()
"""The answer to a statement that returns nothing."""


def _as_answer(value: Answer, source: object) -> FakeResult | Exception:
    """A script's answer as a ``FakeResult`` or an exception; ``source`` is named in errors."""
    if isinstance(value, FakeResult | Exception):
        return value
    try:
        return FakeResult(value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"the answer of {source!r}: {error}") from None


_QUOTED: Final = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")""")
"""A quoted literal or identifier, kept as it is by ``normalize``."""
_TOKEN: Final = re.compile(r"\w+|[^\w\s]")


@functools.lru_cache(maxsize=1024)
def normalize(sql: str) -> str:
    """``sql`` in the form text scripts are compared in: its words and symbols separated by one
    space, without trailing semicolons; quoted literals and identifiers (``'...'``, ``"..."``)
    kept exactly as written, spaces included.

    Letter case is kept: a statement differing in case alone is another statement (the fake
    cannot tell a keyword from a name or a value), which a strict driver reports with the
    scripted statement it resembles.
    """
    tokens: list[str] = []
    for index, part in enumerate(_QUOTED.split(sql)):
        if index % 2:
            tokens.append(part)
        else:
            tokens.extend(_TOKEN.findall(part))
    while tokens and tokens[-1] == ";":
        tokens.pop()
    return " ".join(tokens)


class Scripts:
    """The scripts of one driver, and the matching of statements against them."""

    __slots__ = ("_by_text", "_others", "_texts")

    def __init__(self) -> None:
        # Answers of text scripts, by normalized text: static, or a function computing them.
        self._by_text: dict[str, FakeResult | Exception | Responder] = {}
        # The text each was scripted with, by normalized text: for error messages.
        self._texts: dict[str, str] = {}
        # Patterns with their answers, and functions matching by themselves (answer None);
        # the most recent first.
        self._others: list[
            tuple[re.Pattern[str] | Responder, FakeResult | Exception | Responder]
        ] = []

    def __bool__(self) -> bool:
        return bool(self._by_text or self._others)

    def add(self, statement: Statement, answer: Answer | Responder | None) -> None:
        """Script ``statement``; a later script for the same text or pattern replaces it."""
        if isinstance(statement, str):
            key = normalize(statement)
            self._by_text[key] = self._checked(statement, answer)
            self._texts[key] = statement
        elif isinstance(statement, re.Pattern):
            checked = self._checked(statement, answer)
            self._drop(statement)
            self._others.insert(0, (statement, checked))
        elif callable(statement):
            if answer is not None:
                raise TypeError(
                    "a function scripts statements by itself, returning their answer (or None "
                    "for those it does not answer): pass it alone, as script(function)"
                )
            self._drop(statement)
            self._others.insert(0, (statement, statement))
        else:
            raise TypeError(
                "script() takes a statement's text, a compiled re pattern, or a function "
                f"(sql, args) -> answer; got {type(statement).__name__}"
            )

    def answer(self, sql: str, args: Row) -> FakeResult | Exception | None:
        """What the scripts answer to ``sql`` with ``args``: None when none does."""
        by_text = self._by_text
        if by_text:
            found = by_text.get(normalize(sql))
            if found is not None:
                answer = _answered(found, sql, args)
                if answer is not None:
                    return answer
        for matcher, found in self._others:
            if isinstance(matcher, re.Pattern) and matcher.search(sql) is None:
                continue
            answer = _answered(found, sql, args)
            if answer is not None:
                return answer
        return None

    def unscripted(self, sql: str, args: Row) -> UnscriptedStatementError:
        """The error of a strict driver for ``sql``, which nothing answers."""
        matches = difflib.get_close_matches(normalize(sql), self._texts, n=3, cutoff=0.6)
        closest = tuple(self._texts[match] for match in matches)
        with_args = f" with args {args!r}" if args else ""
        lines = [f"no script answers {sql!r}{with_args} (the driver is strict)"]
        if closest:
            lines.append("closest scripted: " + ", ".join(repr(text) for text in closest))
        elif self:
            others = f" and {len(self._others)} by pattern or function" if self._others else ""
            lines.append(f"none of the {len(self._texts)} scripted by text is close{others}")
        else:
            lines.append("nothing is scripted")
        lines.append(
            "script it with driver.script(sql, rows), or let unscripted statements return no "
            "rows with strict=False"
        )
        return UnscriptedStatementError("\n  ".join(lines), sql=sql, params=args, closest=closest)

    @staticmethod
    def _checked(
        statement: str | re.Pattern[str], answer: Answer | Responder | None
    ) -> FakeResult | Exception | Responder:
        if answer is None:
            raise TypeError(
                f"script({statement!r}) needs an answer: rows, a FakeResult, an exception, or "
                "a function (sql, args) -> answer"
            )
        if isinstance(answer, FakeResult | Exception):
            return answer
        if callable(answer):
            return answer
        return _as_answer(answer, statement)

    def _drop(self, matcher: object) -> None:
        self._others = [entry for entry in self._others if entry[0] != matcher]


def _answered(
    found: FakeResult | Exception | Responder, sql: str, args: Row
) -> FakeResult | Exception | None:
    """The answer a script gives: its own, or its function's (None when that declines)."""
    if isinstance(found, FakeResult | Exception):
        return found
    value = found(sql, args)
    return None if value is None else _as_answer(value, found)


# -- transaction control ----------------------------------------------------------------------

_CONTROL_WORDS: Final = frozenset(
    {"BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
)


def _words(sql: str) -> list[str]:
    return sql.replace(";", " ").upper().split()


def is_transaction_control(sql: str) -> bool:
    """Whether ``sql`` begins, ends or marks a point in a transaction: ``BEGIN``,
    ``START TRANSACTION``, ``COMMIT``, ``END``, ``ROLLBACK [TO]``, ``ABORT``, ``SAVEPOINT``,
    ``RELEASE [SAVEPOINT]``. A strict driver runs those without a script."""
    words = _words(sql)
    if not words:
        return False
    return words[0] in _CONTROL_WORDS or words[:2] == ["START", "TRANSACTION"]


def transaction_change(sql: str) -> bool | None:
    """Whether ``sql`` opens a transaction (True), ends one (False), or does neither (None).

    Recognises ``BEGIN ...``, ``START TRANSACTION``, ``COMMIT``, ``END``, ``ROLLBACK`` and ``ABORT``
    in any case; ``ROLLBACK TO SAVEPOINT`` keeps the transaction open.
    """
    words = _words(sql)
    if not words:
        return None
    first = words[0]
    if first == "BEGIN" or words[:2] == ["START", "TRANSACTION"]:
        return True
    if first in ("COMMIT", "END") or (first in ("ROLLBACK", "ABORT") and "TO" not in words):
        return False
    return None
