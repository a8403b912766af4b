"""Keeping passwords out of every text the pool and its drivers produce.

Three tools, public because every driver that takes a password needs them:

``check_userinfo(url)``
    Refuse a URL whose user name and password cannot be read without doubt, before anything
    parses it. A password typed as it is (``p@ss/word``) makes URL parsers disagree about where
    it ends, and the piece a parser takes for the host or the path then shows up in errors.
    ``create_pool`` calls it for every URL; a driver built from a URL directly calls it too.
``redact_url(url)``
    The URL with its password replaced by ``***``, for error messages and reprs. It never fails
    open: when the password's end is in doubt, everything from ``://`` to the last ``@`` goes.
``Secrets``
    The strings a driver must never let out (the password, as given and as written in the URL,
    and the values a password function returned), and the scrubbing of any text or exception
    that might quote them. A driver passes every error of its ``connect`` through
    ``Secrets.scrub_error`` before raising it; the pool's messages and logs quote only those.

A text leaks a secret if it holds the secret or any run of ``MIN_RUN`` (6) of its characters in a
row: a message that shows half a password has still given it away.
"""

from __future__ import annotations

import inspect
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Final, TypeAlias
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from .errors import RedactedError

__all__ = [
    "MIN_RUN",
    "SECRET_PARAMETERS",
    "Password",
    "Secrets",
    "check_userinfo",
    "redact_url",
    "url_secrets",
]

Password: TypeAlias = "str | Callable[[], str] | Callable[[], Awaitable[str]]"
"""A password as drivers take it: the password itself, or a function (plain or async) that
returns the current one, called at every connect (rotating credentials, cloud IAM tokens)."""

MIN_RUN: Final = 6
"""A run of this many characters of a secret, found in a text, counts as a leak."""

MIN_WHOLE: Final = 4
"""A secret shorter than ``MIN_RUN`` is scrubbed where it appears whole, if it has at least this
many characters; a shorter one cannot be told from ordinary text."""

REMEMBERED: Final = 8
"""How many values of a password function ``Secrets.remember`` keeps (tokens rotate)."""

SECRET_PARAMETERS: Final = frozenset({"password", "sslpassword"})
"""Query parameters whose values are secrets (libpq and asyncpg accept both)."""

# What RFC 3986 allows unencoded in the user information: unreserved characters,
# sub-delimiters and ":" (a "%" must start a percent-encoding).
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*")

_ENCODE_HINT = (
    "percent-encode the user name and password, e.g. urllib.parse.quote(password, safe='')"
)


# ------------------------------------------------------------------ reading the user information


def check_userinfo(url: str) -> None:
    """Refuse ``url`` if its user information cannot be read without doubt.

    That is: more than one ``@`` before the host, an ``@`` after the host (a ``/``, ``?`` or
    ``#`` in a password ends the host part early, so the rest of the password becomes a path or
    a query), or a character that RFC 3986 forbids there unencoded (a space, a quote, a
    non-ASCII letter, a ``%`` that starts no percent-encoding). The message quotes no part of
    the user information. A URL without ``://``, or without a host part (``sqlite:///app.db``),
    has no user information and passes.
    """
    start = url.find("://")
    if start < 0:
        return
    rest = url[start + 3 :]
    authority, after = _split_authority(rest)
    if not authority:
        return
    if authority.count("@") > 1:
        problem = "it holds more than one '@' before the host"
    elif "@" in after:
        problem = (
            "an '@' follows the host: a '/', '?' or '#' in a password ends the host part early"
        )
    elif "@" in authority and not _USERINFO.fullmatch(authority.partition("@")[0]):
        problem = "it holds a character that must be percent-encoded there"
    else:
        return
    raise ValueError(
        f"the user name or password in the database URL cannot be read without doubt: {problem}; "
        f"{_ENCODE_HINT}"
    )


def url_secrets(url: str) -> list[str]:
    """The passwords written in ``url``, for ``Secrets``: its user information's, as written and
    decoded, and the values of its ``password`` and ``sslpassword`` query parameters."""
    found: list[str] = []
    start = url.find("://")
    authority, _ = _split_authority(url[start + 3 :] if start >= 0 else url)
    userinfo, at, _ = authority.rpartition("@")
    if at:
        password = userinfo.partition(":")[2]
        found += [password, unquote(password)]
    for value_start in _secret_parameter_starts(url):
        # The value as a query parser reads it, and, in case an unencoded "&" cut the password
        # short (its rest, read as another parameter, may reach the server and come back in an
        # error), the whole rest of the URL.
        value = re.split("[&#]", url[value_start:], maxsplit=1)[0]
        found += [value, unquote_plus(value), url[value_start:]]
    return [secret for secret in found if secret]


def _split_authority(rest: str) -> tuple[str, str]:
    """Split what follows ``://`` into the authority (``user:password@host:port``) and the rest,
    at the first ``/``, ``?`` or ``#``, as RFC 3986 (and ``urllib.parse``) do."""
    end = next((index for index, char in enumerate(rest) if char in "/?#"), len(rest))
    return rest[:end], rest[end:]


def _secret_parameter_starts(url: str) -> Iterator[int]:
    """Where the value of each ``password=`` or ``sslpassword=`` parameter starts in ``url``;
    each is taken to run to the end of the URL.

    Where it really ends cannot be known: an unencoded ``&`` in a password makes its rest look
    like the next parameter (``password=ab&cd=ef``), and an unencoded ``#`` like a fragment.
    Parameter names are compared decoded and case-insensitively, as lenient parsers do.
    """
    for match in re.finditer(r"[?&]([^&=#]*)=", url):
        if unquote_plus(match.group(1)).lower() in SECRET_PARAMETERS:
            yield match.end()


# ------------------------------------------------------------------ redaction


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages.

    When the URL's user information can be read without doubt, only the password goes:
    ``postgresql://app:***@db/app``. Otherwise everything from ``://`` (or from the start, for
    a malformed URL without it) to the last ``@`` goes: ``postgresql://***@db/app``. The
    value of a ``password`` or ``sslpassword`` query parameter goes too, with the rest of the
    URL after it, where more of the password may hide: ``postgresql://db/app?password=***``.
    """
    spans = [(value_start, len(url)) for value_start in _secret_parameter_starts(url)]
    start = url.find("://")
    start = start + 3 if start >= 0 else 0
    last_at = url.rfind("@")
    if last_at >= start:
        authority, after = _split_authority(url[start:])
        if authority and authority.count("@") == 1 and "@" not in after:
            userinfo = authority.partition("@")[0]
            colon = userinfo.find(":")
            if colon >= 0:
                spans.append((start + colon + 1, start + len(userinfo)))
        elif authority:
            spans.append((start, last_at))
    return _mask(url, spans)


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with each of ``spans`` replaced by ``***``; spans that overlap or touch are
    replaced together."""
    pieces: list[str] = []
    shown_from = 0  # where the text after the last mask starts
    for span_start, span_end in sorted(spans):
        if pieces and span_start <= shown_from:
            shown_from = max(shown_from, span_end)
            continue
        pieces += [text[shown_from:span_start], "***"]
        shown_from = span_end
    pieces.append(text[shown_from:])
    return "".join(pieces)


# ------------------------------------------------------------------ scrubbing text and errors


class Secrets:
    """The strings a driver must never let out, and the scrubbing of texts that might hold them.

    Each secret is known in the forms it takes in text: as it is, percent-encoded (as in a URL)
    and escaped (as in a ``repr``). ``add`` keeps a secret for good; ``remember`` keeps the
    last ``REMEMBERED`` values of a password function, which rotate.

    >>> secrets = Secrets(["correct horse battery"])
    >>> secrets.scrub("login as app with 'correct horse battery' failed")
    "login as app with '***' failed"
    >>> secrets.scrub("a message quoting only 'horse batt'")
    "a message quoting only '***'"
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._runs: set[str] = set()
        self._whole: set[str] = set()
        self._remembered: deque[tuple[frozenset[str], frozenset[str]]] = deque(maxlen=REMEMBERED)
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Keep ``secret`` for as long as this object lives."""
        runs, whole = _forms(secret)
        self._runs |= runs
        self._whole |= whole

    def remember(self, secret: str) -> None:
        """Keep ``secret`` until ``REMEMBERED`` newer ones have been remembered."""
        self._remembered.append(_forms(secret))

    async def password_for_connect(self, password: Password | None) -> str | None:
        """The password for the next connect: ``password`` itself, or what the password
        function returns now, remembered (``remember``) so that an error quoting it is scrubbed.
        A function that returns anything but a string is a ``TypeError`` naming the option."""
        if password is None or isinstance(password, str):
            return password
        answer = password()
        if inspect.isawaitable(answer):
            answer = await answer  # cancel: the connect does not start; nothing is remembered
        if not isinstance(answer, str):
            raise TypeError(
                f"the password function returned {type(answer).__name__}, not a string: make "
                "the function given as password= return the password as a str"
            )
        self.remember(answer)
        return answer

    def __repr__(self) -> str:
        return f"<Secrets: {len(self._runs) + len(self._whole)} runs hidden>"

    def scrub(self, text: str) -> str:
        """``text`` with every secret, and every run of ``MIN_RUN`` characters of one, replaced
        by ``***``."""
        runs, whole = self._all_forms()
        if not runs and not whole:
            return text
        hidden = bytearray(len(text))
        for index in range(len(text) - MIN_RUN + 1):
            if text[index : index + MIN_RUN] in runs:
                hidden[index : index + MIN_RUN] = b"\x01" * MIN_RUN
        for secret in whole:
            found = text.find(secret)
            while found >= 0:
                hidden[found : found + len(secret)] = b"\x01" * len(secret)
                found = text.find(secret, found + 1)
        spans = [match.span() for match in re.finditer(b"\x01+", hidden)]
        return _mask(text, spans) if spans else text

    def leaks(self, text: str) -> bool:
        """Whether ``text`` holds a secret or a run of one."""
        return self.scrub(text) != text

    def scrub_error(self, error: BaseException) -> BaseException:
        """``error``, with every exception of its chain that quotes a secret scrubbed.

        The chain is ``__cause__``, ``__context__`` and the members of exception groups. An
        exception whose ``str``, ``repr`` or notes hold a secret is scrubbed in place, its type
        kept (so ``except`` clauses and ``isinstance`` checks still work): its ``args``, its
        string attributes and its notes. If its text still holds a secret after that (a
        ``__str__`` that builds its text from something else), it is replaced by a
        ``RedactedError`` naming its type, with the scrubbed text and the same traceback. What
        quotes no secret is kept as it is, only relinked to the scrubbed rest of the chain.
        """
        return self._scrubbed(error, {})

    def _scrubbed(self, error: BaseException, done: dict[int, BaseException]) -> BaseException:
        if id(error) in done:  # a chain may loop back
            return done[id(error)]
        clean = self._clean(error, done)
        done[id(error)] = clean
        cause, context = error.__cause__, error.__context__
        clean.__cause__ = self._scrubbed(cause, done) if cause is not None else None
        clean.__context__ = self._scrubbed(context, done) if context is not None else None
        clean.__suppress_context__ = error.__suppress_context__
        return clean

    def _clean(self, error: BaseException, done: dict[int, BaseException]) -> BaseException:
        """``error`` if it quotes no secret or can be scrubbed in place, else a stand-in."""
        if isinstance(error, BaseExceptionGroup):
            return self._clean_group(error, done)
        if not self._quotes_a_secret(error):
            return error
        self._scrub_in_place(error)
        if not self._quotes_a_secret(error):
            return error
        texts = _texts(error)
        shown = self.scrub(texts[0]) if texts is not None else "(its text could not be read)"
        original_type = f"{type(error).__module__}.{type(error).__qualname__}"
        redacted = RedactedError(f"{original_type}: {shown}", original_type=original_type)
        redacted.__traceback__ = error.__traceback__
        _copy_notes(error, redacted, self)
        return redacted

    def _clean_group(
        self, group: BaseExceptionGroup[BaseException], done: dict[int, BaseException]
    ) -> BaseException:
        """A group's message cannot be changed in place: a group that needs one is rebuilt."""
        members = [self._scrubbed(member, done) for member in group.exceptions]
        originals = group.exceptions
        changed = any(new is not old for new, old in zip(members, originals, strict=True))
        if self.leaks(group.message):
            clean: BaseExceptionGroup[BaseException] = BaseExceptionGroup(
                self.scrub(group.message), members
            )
        elif changed:
            clean = group.derive(members)
        else:
            return group
        clean.__traceback__ = group.__traceback__
        _copy_notes(group, clean, self)
        return clean

    def _quotes_a_secret(self, error: BaseException) -> bool:
        texts = _texts(error)
        return texts is None or any(self.leaks(text) for text in texts)

    def _scrub_in_place(self, error: BaseException) -> None:
        """Scrub what an exception's text is usually made of: ``args``, the string attributes
        (asyncpg's server errors keep ``detail`` and ``hint`` there; ``OSError`` its
        ``strerror`` and file names) and the notes."""
        error.args = tuple(self.scrub(arg) if isinstance(arg, str) else arg for arg in error.args)
        attributes = list(vars(error))
        if isinstance(error, OSError):
            attributes += ["strerror", "filename", "filename2"]
        for name in attributes:
            value = getattr(error, name, None)
            if isinstance(value, str):
                setattr(error, name, self.scrub(value))
        notes = getattr(error, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [self.scrub(note) if isinstance(note, str) else note for note in notes]

    def _all_forms(self) -> tuple[set[str], set[str]]:
        if not self._remembered:
            return self._runs, self._whole
        runs, whole = set(self._runs), set(self._whole)
        for remembered_runs, remembered_whole in self._remembered:
            runs |= remembered_runs
            whole |= remembered_whole
        return runs, whole


def _forms(secret: str) -> tuple[frozenset[str], frozenset[str]]:
    """The runs of ``MIN_RUN`` characters of each form ``secret`` takes in text, and the forms
    too short to have runs (but long enough to scrub whole)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]}
    runs = frozenset(
        form[index : index + MIN_RUN] for form in forms for index in range(len(form) - MIN_RUN + 1)
    )
    whole = frozenset(form for form in forms if MIN_WHOLE <= len(form) < MIN_RUN)
    return runs, whole


def _texts(error: BaseException) -> list[str] | None:
    """What an exception shows of itself: ``str``, ``repr`` and notes (None if they raise).

    The ``repr`` without the type's name in front: a name from the code is no secret, however
    much of a password it spells (``InvalidPasswordError`` and the password ``password1``).
    """
    try:
        shown = repr(error).removeprefix(type(error).__name__)
        return [str(error), shown, *map(str, getattr(error, "__notes__", ()))]
    except Exception:
        return None


def _copy_notes(source: BaseException, target: BaseException, secrets: Secrets) -> None:
    for note in getattr(source, "__notes__", ()):
        target.add_note(secrets.scrub(str(note)))
