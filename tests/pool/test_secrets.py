"""No password in any output: typed as people type them, passwords never reach an error, a
traceback, a log record, a repr, the stats or a FastAPI route's body.

A text leaks a password if it holds the password or any run of 6 of its characters in a row
(``aiodbpool.redaction.MIN_RUN``). The last test draws passwords with hypothesis and runs each
against the real PostgreSQL test server, in every form a password takes: in the URL as typed and
percent-encoded, in a ``password=`` query parameter as typed and percent-encoded, as the
``password`` keyword, and as a function returning it.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the route
defined inside a test at run time.
"""

import asyncio
import logging
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from aiodbpool import Pool, PoolConnectError, RedactedError, create_pool
from aiodbpool.integrations.fastapi import connection, install, lifespan
from aiodbpool.integrations.testing import PostgresServer
from aiodbpool.redaction import MIN_RUN, Secrets, check_userinfo, redact_url, url_secrets

_IN_CI = os.environ.get("CI", "").lower() == "true"

PROBE_ROLE = "secrets_probe"


def runs(password: str) -> set[str]:
    """The password itself and every run of ``MIN_RUN`` of its characters."""
    return {password} | {
        password[index : index + MIN_RUN] for index in range(len(password) - MIN_RUN + 1)
    }


def leaked(password: str, text: str) -> list[str]:
    return sorted(run for run in runs(password) if run in text)


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception linked to it: causes, contexts, group members."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            todo += current.exceptions


def error_texts(error: BaseException) -> list[str]:
    """Everything an exception shows: ``str``, ``repr`` and notes of the whole chain, and the
    formatted traceback."""
    texts = ["".join(traceback.format_exception(error))]
    for member in chain(error):
        texts += [str(member), repr(member), *map(str, getattr(member, "__notes__", ()))]
    return texts


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


def captured_logs() -> tuple[_Records, Callable[[], None]]:
    """Every record of the ``aiodbpool`` loggers at DEBUG, formatted with its traceback."""
    handler = _Records()
    logger = logging.getLogger("aiodbpool")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def stop() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    return handler, stop


# ------------------------------------------------------------------ URLs refused as typed

# Each password holds a character that makes URL parsers disagree about where it ends.
TYPED_AS_IS = [
    ("a slash", "pa/ss-word-42"),
    ("a hash", "pa#ss-word-42"),
    ("a question mark", "pa?ss-word-42"),
    ("an at sign", "p@ss-word-42"),
    ("an at sign and a colon", "p@ss:word-42"),
    ("a space", "pass word-42"),
    ("a double quote", 'pass"word-42'),
    ("a non-ASCII letter", "pässwörd-42"),
    ("a lone percent sign", "pass%zzword-42"),
]


@pytest.mark.parametrize(("what", "password"), TYPED_AS_IS, ids=[t[0] for t in TYPED_AS_IS])
def test_a_url_with_a_password_typed_as_is_is_refused_without_quoting_it(
    what: str, password: str
) -> None:
    url = f"postgresql://app:{password}@db.example:5432/app"

    with pytest.raises(ValueError, match="percent-encode") as refused:
        create_pool(url)

    assert "cannot be read without doubt" in str(refused.value)
    for text in error_texts(refused.value):
        assert not leaked(password, text), text


def test_the_same_passwords_percent_encoded_are_accepted_and_never_shown() -> None:
    for _, password in TYPED_AS_IS:
        pool = create_pool(f"postgresql://app:{quote(password, safe='')}@db.example/app")
        assert repr(pool.driver) == "<PostgresDriver 'postgresql://app:***@db.example/app' " + (
            "reset='transaction'>"
        )


def test_an_ampersand_in_a_password_parameter_is_refused_without_quoting_it() -> None:
    url = "postgresql://app@db/app?password=ab&cdefghij"
    with pytest.raises(ValueError, match="percent-encoded as %26") as refused:
        create_pool(url)  # (a literal here would show in the traceback's source line)

    for text in error_texts(refused.value):
        assert "cdefghij" not in text


def test_an_at_sign_in_the_query_must_be_percent_encoded() -> None:
    """Where the password ends is in doubt as soon as an ``@`` follows the host."""
    with pytest.raises(ValueError, match="an '@' follows the host"):
        create_pool("postgresql://db/app?user=me@corp")
    assert create_pool("postgresql://db/app?user=me%40corp")


def test_urls_without_user_information_pass_the_check() -> None:
    for url in ("sqlite:///backups/app@2024.db", "fake://", "postgresql:///app?host=/tmp"):
        check_userinfo(url)


# ------------------------------------------------------------------ what redaction keeps


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql://user:@host/db", "postgresql://user:***@host/db"),
        ("postgresql://:secret@host/db", "postgresql://:***@host/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host:5432/db?user=a%40b", "postgresql://host:5432/db?user=a%40b"),
        ("sqlite:///app.db", "sqlite:///app.db"),
        ("sqlite:///C:/data@2024/app.db", "sqlite:///C:/data@2024/app.db"),
        ("fake://", "fake://"),
        ("postgres:/user:secret@host", "***@host"),
        ("user:secret@host", "user:***@host"),
        ("postgresql://host/db?password=secret", "postgresql://host/db?password=***"),
        # What follows a password parameter may be more of the password: it goes too.
        (
            "postgresql://u@h/db?sslmode=require&PASSWORD=s&x=1",
            "postgresql://u@h/db?sslmode=require&PASSWORD=***",
        ),
        # A "#" after password= may be part of the password: the rest goes too.
        ("postgresql://u:a@h/db?password=b#frag", "postgresql://u:***@h/db?password=***"),
    ],
)
def test_redact_url_hides_only_the_password_when_it_is_clear_where_it_ends(
    url: str, redacted: str
) -> None:
    assert redact_url(url) == redacted


# ------------------------------------------------------------------ redaction never fails open


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pa/ss-word-42@db/app",
        "postgresql://app:pa?ss-word-42@db/app",
        "postgresql://app:pa#ss-word-42@db/app",
        "postgresql://app:p@ss-word-42@db/app",
        "postgresql://db/app?password=ss-word-42@x",
        "postgresql://app:x?password=ss-word-42@db/app",
        "postgresql://db/app?password=ss&-word-42",
        "postgresql://db/app?pass%77ord=ss-word-42",
        "postgresql://db/app?sslpassword=ss-word-42",
        "postgres:/app:ss-word-42@db/app",
        "app:ss-word-42@db/app",
    ],
)
def test_redaction_hides_the_password_wherever_it_may_end(url: str) -> None:
    assert "word-4" not in redact_url(url)


# Where the password sits in each kind of URL; {} is the password as written.
URL_SHAPES = [
    "postgresql://app:{}@db.example:5432/app?sslmode=require",
    "postgresql://db.example/app?password={}&sslmode=require",
    "postgresql://db.example/app?sslmode=require&password={}",
    "postgres://:{}@db.example/app",
    "mysql://app:{}@db.example/app",
]

passwords = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
    min_size=MIN_RUN,
    max_size=40,
)


@given(password=passwords, shape=st.sampled_from(URL_SHAPES), encoded=st.booleans())
@example(password="p@ss/word?#&x=1", shape=URL_SHAPES[0], encoded=False)
@example(password="secret&sslmode=disable", shape=URL_SHAPES[1], encoded=False)
@example(password="&0000=", shape=URL_SHAPES[1], encoded=False)  # a password like a parameter
def test_redact_url_never_shows_a_run_of_the_password(
    password: str, shape: str, encoded: bool
) -> None:
    written = quote(password, safe="") if encoded else password
    assume(not leaked(password, shape))
    assert not leaked(password, redact_url(shape.format(written)))


# ------------------------------------------------------------------ scrubbing errors


def test_secrets_scrub_the_password_and_any_run_of_it() -> None:
    secrets = Secrets(["correct horse battery"])

    assert secrets.scrub("a 'correct horse battery' b") == "a '***' b"
    assert secrets.scrub("a 'horse b' b") == "a '***' b"
    assert secrets.scrub("a 'horse' b") == "a 'horse' b"  # 5 characters: ordinary text
    assert secrets.scrub("u:correct%20horse@") == "u:***@"  # percent-encoded, as in a URL
    assert "horse" not in repr(secrets)


def test_a_short_secret_is_scrubbed_where_it_appears_whole() -> None:
    assert Secrets(["s3cr"]).scrub("login s3cr failed") == "login *** failed"
    assert Secrets(["abc"]).scrub("abc") == "abc"  # too short to tell from ordinary text


def test_secrets_remember_the_last_values_of_a_password_function() -> None:
    secrets = Secrets()
    for version in range(10):
        secrets.remember(f"token-number-{version}")

    assert secrets.scrub("token-number-9") == "***"
    assert secrets.scrub("token-number-2") == "***"  # a run of a newer one still matches
    assert Secrets().scrub("token-number-2") == "token-number-2"


def test_scrub_error_keeps_an_error_that_quotes_no_secret() -> None:
    error = ConnectionRefusedError(111, "Connect call failed")
    assert Secrets(["hunter2-password"]).scrub_error(error) is error


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


def test_scrub_error_scrubs_in_place_down_the_whole_chain_keeping_the_types() -> None:
    secrets = Secrets(["hunter2-password"])
    root = _raised(FileNotFoundError(2, "no such file", "/etc/hunter2-password"))
    middle = ValueError("parsing failed")
    middle.__context__ = root
    top = _raised(KeyError("hunter2-pass: unknown"))
    top.__cause__ = middle
    top.add_note("while connecting with hunter2-password")

    clean = secrets.scrub_error(top)

    assert clean is top  # scrubbed in place: an except clause still catches it
    assert clean.__cause__ is middle
    assert middle.__context__ is root
    assert str(root) == "[Errno 2] no such file: '/etc/***'"
    assert str(top) == "'***: unknown'"
    assert top.__notes__ == ["while connecting with ***"]
    for text in error_texts(clean):
        assert not leaked("hunter2-password", text), text


def test_a_type_name_that_spells_part_of_a_password_is_no_leak() -> None:
    """A password with a common word in it: the word goes from the message, the type stays."""
    error = asyncpg.InvalidPasswordError('password authentication failed for user "app"')

    clean = Secrets(["not-the-password"]).scrub_error(error)

    assert clean is error
    assert str(error) == '*** authentication failed for user "app"'


class _Parts(Exception):
    """An error that builds its text from something other than strings."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__()
        self.parts = parts

    def __str__(self) -> str:
        return " ".join(self.parts)


def test_an_error_that_cannot_be_scrubbed_in_place_is_replaced() -> None:
    secrets = Secrets(["hunter2-password"])
    cause = ValueError("plain")
    error = _raised(_Parts(("login", "hunter2-password", "refused")))
    error.__cause__ = cause

    clean = secrets.scrub_error(error)

    assert isinstance(clean, RedactedError)
    assert clean.original_type == f"{__name__}._Parts"
    assert str(clean) == f"{__name__}._Parts: login *** refused"
    assert clean.__traceback__ is error.__traceback__
    assert clean.__cause__ is cause


def test_scrub_error_reaches_into_exception_groups_and_survives_loops() -> None:
    secrets = Secrets(["hunter2-password"])
    first = _Parts(("tried", "hunter2-password"))
    second = OSError("refused")
    group = ExceptionGroup("all hosts failed", [first, second])
    group.__context__ = group  # a loop, as broken code may make

    clean = secrets.scrub_error(group)

    assert isinstance(clean, ExceptionGroup)
    assert isinstance(clean.exceptions[0], RedactedError)
    assert clean.exceptions[1] is second
    for text in error_texts(clean):
        assert "hunter2" not in text


def test_a_group_whose_message_quotes_a_secret_is_rebuilt() -> None:
    group = ExceptionGroup("connecting with hunter2-password", [OSError("refused")])

    clean = Secrets(["hunter2-password"]).scrub_error(group)

    assert isinstance(clean, ExceptionGroup)
    assert clean.message == "connecting with ***"
    assert clean.exceptions == group.exceptions


def test_an_error_whose_text_cannot_be_read_is_replaced() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    clean = Secrets(["hunter2-password"]).scrub_error(Unprintable())
    assert isinstance(clean, RedactedError)
    assert "could not be read" in str(clean)


def test_url_secrets_finds_every_form_of_the_password() -> None:
    found = url_secrets("postgresql://app:p%40ss-word@db/app?password=other+one&x=1")
    assert "p@ss-word" in found
    assert "p%40ss-word" in found
    assert "other one" in found


# ------------------------------------------------------------------ the real driver


async def test_a_server_error_quoting_part_of_the_password_is_scrubbed(
    probe_role: PostgresServer,
) -> None:
    """An unencoded ``&`` cuts the password parameter short; what follows reaches the server as
    a setting, and the server's refusal names it: the driver scrubs that error."""
    await _set_probe_password(probe_role, "open-sesame")
    url = (
        f"postgresql://{PROBE_ROLE}@{probe_role.host}:{probe_role.port}/{probe_role.database}"
        "?password=open-sesame&secretpart=1"
    )
    pool = create_pool(url, connect_timeout=10)
    with pytest.raises(PoolConnectError) as failed:
        async with pool, pool.acquire():
            pass

    cause = failed.value.__cause__
    assert isinstance(cause, asyncpg.PostgresError)  # the type is kept
    assert 'unrecognized configuration parameter "***"' in str(cause)
    for text in error_texts(failed.value):
        assert "secretpart" not in text


async def _set_password(admin: asyncpg.Connection, password: str) -> None:
    statement = await admin.fetchval(
        "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
        PROBE_ROLE,
        password,
    )
    await admin.execute(statement)


@pytest.fixture(scope="module")
def probe_role(postgres_server: PostgresServer) -> PostgresServer:
    """A role whose password each example sets, with the rights to connect to the database."""
    postgres_server.psql(
        f"DO $$ BEGIN CREATE ROLE {PROBE_ROLE} LOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    postgres_server.psql(f"GRANT CONNECT ON DATABASE {postgres_server.database} TO {PROBE_ROLE}")
    return postgres_server


# ------------------------------------------------------------------ every channel, every form

FORMS = ("url", "url-encoded", "parameter", "parameter-encoded", "keyword", "function")


def _pool_for(cluster: PostgresServer, form: str, password: str) -> Pool[Any]:
    where = f"{cluster.host}:{cluster.port}/{cluster.database}"
    options: dict[str, Any] = {
        "name": "secrets",
        "connect_timeout": 10,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "maintenance_interval": 0.01,
        "breaker_threshold": 3,
    }
    if form == "url":
        return create_pool(f"postgresql://{PROBE_ROLE}:{password}@{where}", **options)
    if form == "url-encoded":
        encoded = quote(password, safe="")
        return create_pool(f"postgresql://{PROBE_ROLE}:{encoded}@{where}", **options)
    if form == "parameter":
        return create_pool(f"postgresql://{PROBE_ROLE}@{where}?password={password}", **options)
    if form == "parameter-encoded":
        encoded = quote(password, safe="")
        return create_pool(f"postgresql://{PROBE_ROLE}@{where}?password={encoded}", **options)
    if form == "keyword":
        return create_pool(f"postgresql://{PROBE_ROLE}@{where}", password=password, **options)

    async def current_password() -> str:
        return password

    return create_pool(f"postgresql://{PROBE_ROLE}@{where}", password=current_password, **options)


async def _use(pool: Pool[Any], texts: list[str]) -> bool:
    """Open ``pool``, borrow from it, serve every route of the FastAPI integration, close it:
    collect every text each step shows. Return whether the borrowed connection worked."""
    app = FastAPI(lifespan=lifespan(pool))
    install(app, stats_path="/pool/stats", metrics_path="/metrics", ready_cache=0)

    @app.get("/query")
    async def query(conn: Annotated[Any, Depends(connection)]) -> int:
        value: int = await conn.fetchval("SELECT 1")
        return value

    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        pool.resize(min_size=1)  # background refills, which log their failures
        worked = False
        try:
            async with pool.acquire(timeout=10) as conn:
                worked = await conn.fetchval("SELECT 1") == 1
        except Exception as error:
            texts += error_texts(error)
        deadline = time.monotonic() + 5
        while pool.stats().size == 0 and pool.stats().connect_errors < 3:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        for path in ("/health/live", "/health/ready", "/pool/stats", "/metrics", "/query"):
            texts.append((await client.get(path)).text)
        texts += [repr(pool), repr(pool.driver), repr(pool.stats())]
    return worked


def _channels(cluster: PostgresServer, form: str, password: str) -> tuple[list[str], str]:
    """Every text that a pool built with ``password`` in ``form`` shows, from ``create_pool``
    to ``close()``; and what became of the pool: ``"refused"`` by ``create_pool``, or whether
    its connection ``"worked"`` or ``"failed"``."""
    texts: list[str] = []
    records, stop = captured_logs()
    try:
        try:
            pool = _pool_for(cluster, form, password)
        except Exception as error:  # refused: the refusal is the whole output
            texts += error_texts(error)
            outcome = "refused"
        else:
            texts += [repr(pool), repr(pool.driver)]
            outcome = "worked" if asyncio.run(_use(pool, texts)) else "failed"
    finally:
        stop()
    return texts + records.texts, outcome


def _read_as_typed(form: str, password: str) -> bool:
    """Whether the driver reads ``password`` in ``form`` exactly as it was typed, once the pool
    accepts it: percent-encoded, or kept out of the URL; typed in a URL, unless it holds what
    URLs decode (a ``%``, and in a query a ``+``) or what ends a query value (``&``, ``#``)."""
    if form == "url":
        return "%" not in password
    if form == "parameter":
        return not any(char in password for char in "%+&#")
    return True


async def _set_probe_password(cluster: PostgresServer, password: str) -> None:
    admin = await asyncpg.connect(cluster.admin_dsn)
    try:
        await _set_password(admin, password)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def ordinary_output(probe_role: PostgresServer) -> str:
    """What the channels show anyway, with a password in no danger of being quoted: a run of a
    drawn password found here is the pool's own text, not a leak."""
    asyncio.run(_set_probe_password(probe_role, "Zq-neutral-0"))
    texts = [text for form in FORMS for text in _channels(probe_role, form, "Zq-other-1")[0]]
    return "\n".join(texts)


_NUMBERS = re.compile(rf"[\d.eE+-]{{{MIN_RUN}}}")


@settings(
    max_examples=150 if _IN_CI else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(password=passwords, form=st.sampled_from(FORMS), correct=st.booleans())
@example(password="p@ss:w/rd?#&x=1", form="url", correct=True)
@example(password="secret&sslmode=disable", form="parameter", correct=True)
@example(password="pässwörd 'quoted'", form="url-encoded", correct=True)
@example(password="rotating-token-01", form="function", correct=False)
def test_no_channel_shows_the_password(
    probe_role: PostgresServer, ordinary_output: str, password: str, form: str, correct: bool
) -> None:
    """Drawn from every printable character, unicode included. ``correct`` decides whether the
    server accepts the password (so the pool works) or refuses it (so connects fail, the
    breaker opens and readiness fails). Runs made only of digits and number signs are not
    searched: stats and metrics are full of numbers that vary from run to run.

    A pool that accepted an ASCII password connects with it: what the pool accepts is what the
    driver reads. (SCRAM normalizes other passwords first, with SASLprep, and asyncpg and the
    server may disagree about unusual characters, a matter between the two.)"""
    assume(not leaked(password, ordinary_output))
    assume(not _NUMBERS.search(password))
    server_password = password if correct else "Zq-neutral-0"
    asyncio.run(_set_probe_password(probe_role, server_password))

    texts, outcome = _channels(probe_role, form, password)

    for text in texts:
        assert not leaked(password, text), f"{form}: {leaked(password, text)} in:\n{text}"
    if correct and outcome != "refused" and password.isascii() and _read_as_typed(form, password):
        assert outcome == "worked"
    if not correct:
        assert outcome != "worked"
