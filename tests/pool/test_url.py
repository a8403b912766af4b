"""create_pool(url): the scheme picks a driver registered in the ``aiodbpool.drivers`` entry-point
group, keyword options are split between the pool and the driver, and errors never show a
password.

Third-party drivers are registered the way an installed package registers them: a ``.dist-info``
directory with an ``entry_points.txt``, on ``sys.path``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiodbpool import Pool, create_pool
from aiodbpool.drivers.fake import FakeDriver

Register = Callable[[str, str], None]

THIRD_PARTY_MODULE = "aiodbpool_test_mydb"
THIRD_PARTY_SOURCE = '''
"""A third-party driver, as a separate package would ship it."""


class MyDbDriver:
    def __init__(self, url, options):
        self.url = url
        self.options = options

    async def connect(self):
        return object()

    async def close(self, conn):
        pass

    async def ping(self, conn):
        pass

    async def reset(self, conn):
        pass

    def is_closed(self, conn):
        return False


def from_url(url, **options):
    return MyDbDriver(url, options)
'''


@pytest.fixture
def register_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Register]:
    """Install, for this test only, a distribution registering ``scheme = target`` drivers."""
    (tmp_path / f"{THIRD_PARTY_MODULE}.py").write_text(THIRD_PARTY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    count = 0

    def register(scheme: str, target: str) -> None:
        nonlocal count
        count += 1
        dist_info = tmp_path / f"aiodbpool_test_driver_{count}-1.0.dist-info"
        dist_info.mkdir()
        metadata = f"Metadata-Version: 2.1\nName: aiodbpool-test-driver-{count}\nVersion: 1.0\n"
        (dist_info / "METADATA").write_text(metadata)
        (dist_info / "entry_points.txt").write_text(f"[aiodbpool.drivers]\n{scheme} = {target}\n")

    yield register
    sys.modules.pop(THIRD_PARTY_MODULE, None)


# ------------------------------------------------------------------ the built-in fake driver


def test_create_pool_returns_an_unopened_pool_with_the_fake_driver() -> None:
    pool = create_pool("fake://")

    assert isinstance(pool, Pool)
    assert isinstance(pool.driver, FakeDriver)
    assert not pool.closed
    assert repr(pool) == "<Pool 'default' new size=0 idle=0 in_use=0 waiting=0 max=10>"


def test_create_pool_splits_pool_options_from_driver_options() -> None:
    pool = create_pool("fake://?connect_latency=0.5", name="app", max_size=3, query_latency=0.25)

    assert (pool.name, pool.stats().max_size) == ("app", 3)
    driver = pool.driver
    assert isinstance(driver, FakeDriver)
    assert (driver.connect_latency, driver.query_latency) == (0.5, 0.25)


def test_create_pool_reports_a_bad_pool_option_by_name() -> None:
    with pytest.raises(ValueError, match="max_size"):
        create_pool("fake://", max_size=0)


def test_create_pool_passes_unknown_options_to_the_driver_which_refuses_them() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        create_pool("fake://", no_such_option=1)


def test_url_schemes_are_case_insensitive() -> None:
    assert isinstance(create_pool("FAKE://").driver, FakeDriver)


async def test_a_pool_from_a_url_opens_and_works() -> None:
    async with create_pool("fake://", min_size=1) as pool, pool.acquire() as conn:
        assert await conn.execute("SELECT 1") == "OK"


# ------------------------------------------------------------------ errors


def test_an_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no aiodbpool driver for URL scheme 'nosuchdb'") as e:
        create_pool("nosuchdb://localhost/app")

    assert "known schemes: " in str(e.value)
    assert "fake" in str(e.value).split("known schemes: ")[1]


@pytest.mark.parametrize(
    "url", ["", "localhost:5432", "//host/db", "postgres:/host/db", "1db://host", "fake:"]
)
def test_a_malformed_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not a database URL"):
        create_pool(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgres:/admin:hunter2@db/app",
        "postgres//admin:hunter2@db/app",
        "admin:hunter2@db/app",
        "1db://admin:hunter2@db/app",
    ],
)
def test_a_malformed_url_error_does_not_show_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="not a database URL") as refused:
        create_pool(url)

    assert "hunter2" not in str(refused.value)
    assert "***@db" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "mistake"),
    [
        ("postgresql://app:hunter2@db/app\n", "starts or ends with whitespace"),
        (" sqlite:///app.db", "starts or ends with whitespace"),
        ("postgresql://app:hunter2@db/app\r\n", "starts or ends with whitespace"),
        ("postgresql://app:hunter2@db/a\x00pp", r"control character '\\x00' at position 29"),
        ("sqlite:///app\t.db", r"control character '\\t'"),
    ],
)
def test_whitespace_around_a_url_or_a_control_character_in_it_is_refused(
    url: str, mistake: str
) -> None:
    """Usually a URL read from a file or an environment variable, newline and all: refused
    here, not at the first connect."""
    with pytest.raises(ValueError, match=mistake) as refused:
        create_pool(url)
    assert "hunter2" not in str(refused.value)


def test_a_sqlite_path_may_contain_spaces(tmp_path: Path) -> None:
    pool = create_pool(f"sqlite:///{tmp_path / 'my data' / 'app.db'}")
    assert "my data" in repr(pool.driver)


# ------------------------------------------------------------------ third-party drivers


async def test_a_third_party_driver_registered_by_entry_point_is_used(
    register_driver: Register,
) -> None:
    register_driver("mydb", f"{THIRD_PARTY_MODULE}:from_url")

    pool = create_pool("mydb://user@host/app", max_size=2, flavour="strict")

    assert type(pool.driver).__name__ == "MyDbDriver"
    assert type(pool.driver).__module__ == THIRD_PARTY_MODULE
    assert vars(pool.driver) == {"url": "mydb://user@host/app", "options": {"flavour": "strict"}}
    assert pool.stats().max_size == 2
    async with pool, pool.acquire():
        assert pool.stats().in_use == 1


def test_a_registered_scheme_appears_among_the_known_ones(register_driver: Register) -> None:
    register_driver("mydb", f"{THIRD_PARTY_MODULE}:from_url")

    with pytest.raises(ValueError, match=r"known schemes: .*mydb"):
        create_pool("otherdb://host")


def test_a_driver_whose_import_fails_says_how_to_fix_it(register_driver: Register) -> None:
    register_driver("brokendb", "aiodbpool_test_not_installed:from_url")

    with pytest.raises(ImportError, match="install the driver's package") as failed:
        create_pool("brokendb://host/app")

    message = str(failed.value)
    assert "the driver for 'brokendb' URLs cannot be imported" in message
    assert "aiodbpool_test_not_installed" in message
    assert isinstance(failed.value.__cause__, ImportError)


def test_a_built_in_driver_whose_client_is_missing_names_the_extra_to_install(
    register_driver: Register,
) -> None:
    register_driver("postgresql", "aiodbpool_test_not_installed:from_url")

    with pytest.raises(ImportError, match=r"install aiodbpool\[postgres\]"):
        create_pool("postgresql://user:secret@host/app")


@pytest.mark.parametrize(
    ("url", "client", "extra"),
    [
        ("postgresql://app:secret@db/app", "asyncpg", "postgres"),
        ("postgres://app:secret@db/app", "asyncpg", "postgres"),
        ("sqlite:///app.db", "aiosqlite", "sqlite"),
    ],
)
def test_a_missing_database_client_names_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch, url: str, client: str, extra: str
) -> None:
    # As if the client library were not installed: importing it raises ImportError.
    monkeypatch.setitem(sys.modules, client, None)
    for module in ("aiodbpool.drivers.postgres", "aiodbpool.drivers.sqlite"):
        monkeypatch.delitem(sys.modules, module, raising=False)

    with pytest.raises(ImportError, match=rf"install aiodbpool\[{extra}\]") as failed:
        create_pool(url)

    assert "secret" not in str(failed.value)


# ------------------------------------------------------------------ pool options in the URL


def test_pool_options_in_the_url_configure_the_pool_and_never_reach_the_driver() -> None:
    pool = create_pool(
        "fake://?max_size=3&connect_latency=0.5&acquire_timeout=none&name=app&max_idle=2.5"
    )

    assert (pool.name, pool.stats().max_size) == ("app", 3)
    assert pool._options.acquire_timeout is None
    assert pool._options.max_idle == 2.5
    driver = pool.driver
    assert isinstance(driver, FakeDriver)
    assert driver.connect_latency == 0.5  # the driver's own parameter, still in its URL


def test_the_driver_gets_the_rest_of_the_url_character_for_character(
    register_driver: Register,
) -> None:
    register_driver("mydb", f"{THIRD_PARTY_MODULE}:from_url")
    url = "mydb://us%40er:p%26ss%3Fw@host:5/db?sslmode=require&max_size=4&x=a%20b&min_size=1"

    pool = create_pool(url)

    driver = pool.driver
    assert driver.url == "mydb://us%40er:p%26ss%3Fw@host:5/db?sslmode=require&x=a%20b"  # type: ignore[attr-defined]
    assert (pool.stats().min_size, pool.stats().max_size) == (1, 4)
    assert create_pool("mydb://host/db?max_size=2").driver.url == "mydb://host/db"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("fake://?max_size=2", {"max_size": 3}, "max_size is given twice, in the URL and to"),
        ("fake://?max_size=2&max_size=3", {}, "max_size is given twice in the URL"),
        ("fake://?max_size=lots", {}, "max_size in the URL must be a whole number, or none"),
        ("fake://?acquire_timeout=soon", {}, "acquire_timeout in the URL must be a number of sec"),
        ("fake://?max_size=0", {}, "max_size must be at least 1"),
        ("fake://?clock=1", {}, "clock cannot be given in a URL: pass create_pool"),
        ("fake://?close_driver=0", {}, "close_driver cannot be given in a URL"),
    ],
)
def test_a_bad_pool_option_in_the_url_is_refused_naming_it(
    url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_pool(url, **options)


def test_a_bad_value_in_the_url_is_not_quoted() -> None:
    """A value after a password parameter's unencoded '&' could be a piece of the password."""
    with pytest.raises(ValueError, match="max_size in the URL must be a whole number") as refused:
        create_pool("fake://?password=ab&max_size=cd-secret-part")
    assert "secret" not in str(refused.value)


async def test_a_postgres_url_with_pool_options_opens_a_pool_that_works(postgres_url: str) -> None:
    """Before, ``?max_size=2`` reached PostgreSQL as a setting of its own, and every connect
    failed ("unrecognized configuration parameter"); the URL's own settings still reach it."""
    joiner = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{joiner}max_size=2&application_name=aiodbpool-url-options"

    async with create_pool(url) as pool, pool.acquire() as conn:
        assert await conn.fetchval("SHOW application_name") == "aiodbpool-url-options"
        assert pool.stats().max_size == 2
