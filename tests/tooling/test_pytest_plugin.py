"""aiodbpool's pytest plugin, seen from a user's project: sample test files run in pytest sessions
of their own (pytester), under each way of running async tests, and what loading it costs.

The pool fixtures must open their pools in the event loop that runs the test, whoever runs it:
pytest-asyncio in strict or auto mode (function- or module-scoped loops), or anyio's plugin, alone
or beside pytest-asyncio. Each session here gets ``$AIODBPOOL_TEST_DSN`` set to this suite's
server, so only the one that tests ``postgres_server`` starts a server of its own.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pwd
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Imported here so that the sessions run in this process find them loaded (a C extension must
# not be imported twice), and keep them when pytester restores sys.modules.
import aiosqlite  # noqa: F401
import anyio.pytest_plugin  # noqa: F401
import asyncpg  # noqa: F401
import pytest
import pytest_asyncio  # noqa: F401

from aiodbpool.integrations.testing import TEST_DSN_VARIABLE
from aiodbpool.integrations.testing.postgres import SERVER_USER_VARIABLE

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""

SAMPLE = """
import asyncio

import pytest
{imports}
{mark}

POOLS = []


async def test_fake_pool_is_open_in_the_tests_loop(fake_pool):
    POOLS.append(fake_pool)
    async with fake_pool.acquire() as conn:
        assert await conn.execute("SELECT 1") == "OK"
    assert fake_pool.driver.opened == 1


async def test_the_previous_tests_pool_was_closed_after_it(fake_pool):
    (earlier,) = POOLS
    assert earlier.closed and earlier.driver.live == 0
    assert fake_pool is not earlier and not fake_pool.closed


async def test_sqlite_pool(sqlite_pool):
    async with sqlite_pool.acquire() as conn:
        async with conn.execute("SELECT 1") as cursor:
            assert await cursor.fetchone() == (1,)


async def test_postgres_pool(postgres_pool):
    async with postgres_pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1
"""

USERS_FIXTURE = '''

@{decorator}
async def borrowed_once(fake_pool):
    """A fixture of the user's that uses the pool in its own set-up."""
    async with fake_pool.acquire() as conn:
        await conn.execute("SELECT 1")
    return fake_pool.driver.opened


async def test_a_fixture_of_the_users_builds_on_fake_pool(borrowed_once, fake_pool):
    assert borrowed_once == 1
    async with fake_pool.acquire():
        pass
'''


@dataclass(frozen=True)
class Mode:
    """One way of running async tests: the session's ini and options, and the sample's marks."""

    asyncio_mode: str | None  # None: pytest-asyncio is not loaded
    anyio: bool  # whether anyio's plugin is loaded
    mark: str  # the sample's module-level marker, if any
    users_fixture: str | None  # the decorator of the user's async fixture (None: no such test)

    def args(self) -> list[str]:
        args = ["-p", "no:randomly"]
        if self.asyncio_mode is None:
            args += ["-p", "no:asyncio"]
        if not self.anyio:
            args += ["-p", "no:anyio"]
        return args

    def ini(self) -> str:
        if self.asyncio_mode is None:
            return "[pytest]\n"
        return (
            f"[pytest]\nasyncio_mode = {self.asyncio_mode}\n"
            "asyncio_default_fixture_loop_scope = function\n"
        )

    def sample(self) -> str:
        imports = "import pytest_asyncio" if self.asyncio_mode is not None else ""
        text = SAMPLE.format(imports=imports, mark=self.mark)
        if self.users_fixture is not None:
            text += USERS_FIXTURE.format(decorator=self.users_fixture)
        return text

    @property
    def tests(self) -> int:
        return 4 if self.users_fixture is None else 5


MODES = {
    "pytest-asyncio strict": Mode(
        asyncio_mode="strict",
        anyio=False,
        mark="pytestmark = pytest.mark.asyncio",
        users_fixture="pytest_asyncio.fixture",
    ),
    "pytest-asyncio auto": Mode(
        asyncio_mode="auto", anyio=False, mark="", users_fixture="pytest.fixture"
    ),
    "anyio": Mode(
        asyncio_mode=None,
        anyio=True,
        mark="pytestmark = pytest.mark.anyio",
        users_fixture="pytest.fixture",
    ),
    "anyio beside pytest-asyncio strict": Mode(
        asyncio_mode="strict",
        anyio=True,
        mark="pytestmark = pytest.mark.anyio",
        users_fixture="pytest.fixture",
    ),
    # pytest-asyncio in auto mode runs every async test, anyio-marked ones too, and the pool
    # fixtures follow it. (A user's own async fixture would be claimed by anyio's plugin and run
    # in anyio's loop: a conflict between the two plugins that this sample leaves out.)
    "anyio marks under pytest-asyncio auto": Mode(
        asyncio_mode="auto", anyio=True, mark="pytestmark = pytest.mark.anyio", users_fixture=None
    ),
}


@pytest.fixture
def project(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """An empty project of a user's, whose PostgreSQL tests run on this suite's server."""
    monkeypatch.setenv(TEST_DSN_VARIABLE, postgres_url)
    pytester.makeconftest(CONFTEST)
    return pytester


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
def test_pool_fixtures_open_in_the_loop_of_each_kind_of_async_test(
    project: pytest.Pytester, mode: Mode
) -> None:
    project.makeini(mode.ini())
    project.makepyfile(test_sample=mode.sample())
    result = project.runpytest(*mode.args())
    result.assert_outcomes(passed=mode.tests)


def test_pool_fixtures_follow_a_module_scoped_loop_of_pytest_asyncio(
    project: pytest.Pytester,
) -> None:
    project.makeini(MODES["pytest-asyncio strict"].ini())
    project.makepyfile(
        test_module_loop="""
        import asyncio

        import pytest

        pytestmark = pytest.mark.asyncio(loop_scope="module")
        LOOPS = []


        async def test_one(fake_pool, sqlite_pool):
            LOOPS.append(asyncio.get_running_loop())
            async with fake_pool.acquire(), sqlite_pool.acquire():
                pass


        async def test_two_in_the_same_loop(fake_pool, postgres_pool):
            assert LOOPS == [asyncio.get_running_loop()]
            async with fake_pool.acquire(), postgres_pool.acquire():
                pass
        """
    )
    project.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_a_misused_fixture_says_what_to_change(project: pytest.Pytester) -> None:
    """A test no async plugin runs, one on anyio's trio backend, and options given to the
    marker as a dict: each fails at set-up with a message that says what to change."""
    project.makeini(MODES["pytest-asyncio strict"].ini())
    project.makepyfile(
        test_misused="""
        import pytest


        def test_sync(fake_pool):
            pass


        async def test_unmarked_in_strict_mode(sqlite_pool):
            pass


        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["trio"])
        async def test_on_trio(postgres_pool):
            pass


        @pytest.mark.asyncio
        @pytest.mark.pool_options({"max_size": 1})
        async def test_options_as_a_dict(fake_pool):
            pass
        """
    )
    result = project.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        [
            "*fake_pool opens its pool in the event loop of the test that uses it, so the test "
            "must be an async test run by pytest-asyncio (mark it @pytest.mark.asyncio, or set "
            "asyncio_mode = auto) or by anyio's pytest plugin (mark it @pytest.mark.anyio); "
            "test_misused.py::test_sync is run by neither",
            "*sqlite_pool opens its pool*test_misused.py::test_unmarked_in_strict_mode is run by "
            "neither",
            "*postgres_pool: aiodbpool runs on asyncio, and this test runs on anyio's 'trio' "
            "backend*return 'asyncio' from an anyio_backend fixture*",
            "*@pytest.mark.pool_options takes keyword arguments (options of aiodbpool.Pool), "
            "not ({'max_size': 1},)",
        ]
    )


OPTIONAL = ("pytest_asyncio", "anyio", "pgserver")
"""Packages a project that installs aiodbpool may not have, by the prefix of their entries."""


@pytest.fixture(scope="module")
def without_optional_packages(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ``PYTHONPATH`` for ``python -S``: this process's ``sys.path``, with site-packages
    replaced by links to everything in it but pytest-asyncio, anyio and pgserver."""
    site_packages = Path(pytest.__file__).resolve().parent.parent
    shadow = tmp_path_factory.mktemp("site-packages")
    for entry in site_packages.iterdir():
        if not entry.name.startswith(OPTIONAL) and entry.suffix != ".pth":
            (shadow / entry.name).symlink_to(entry)
    paths = [str(shadow) if Path(path) == site_packages else path for path in sys.path if path]
    return os.pathsep.join(paths)


def test_the_plugin_loads_without_pytest_asyncio_anyio_or_pgserver(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, without_optional_packages: str
) -> None:
    """In a project that has none of them, the plugin loads, and the fixtures that need one say
    what to install."""
    monkeypatch.setenv("PYTHONPATH", without_optional_packages)
    monkeypatch.delenv(TEST_DSN_VARIABLE, raising=False)
    pytester.makepyfile(
        test_bare="""
        import importlib.util


        def test_none_of_them_is_installed():
            assert [importlib.util.find_spec(name) for name in OPTIONAL] == [None] * 3


        async def test_fake(fake_pool):
            pass


        def test_server(postgres_url):
            pass
        """.replace("OPTIONAL", repr(OPTIONAL))
    )
    result = pytester.run(
        sys.executable, "-S", "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*fake_pool opens its pool*; neither is installed: pip install pytest-asyncio "
            "(or 'aiodbpool[[]testing[]]'), or anyio",
            "*postgres_server: the throwaway PostgreSQL server runs pgserver's programs, and the "
            "'pgserver' package is not installed: pip install 'aiodbpool[[]testing[]]'*",
        ]
    )


def test_postgres_server_is_started_again_after_a_test_that_stopped_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``$AIODBPOOL_TEST_DSN``, ``postgres_url`` is the URL of the session's own server,
    which the session deletes at its end."""
    monkeypatch.delenv(TEST_DSN_VARIABLE, raising=False)
    pytester.makeini(MODES["pytest-asyncio strict"].ini())
    pytester.makepyfile(
        test_server="""
        import json


        def test_stops_the_server(postgres_server):
            postgres_server.stop("immediate")


        def test_finds_it_running_again(postgres_server, postgres_url):
            assert postgres_server.is_running()
            assert postgres_url == postgres_server.dsn
            with open("server.json", "w") as report:
                json.dump({"directory": str(postgres_server.data_dir.parent)}, report)
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)
    report = json.loads((pytester.path / "server.json").read_text())
    assert not Path(report["directory"]).exists()


def test_no_server_and_no_system_user_unless_a_test_needs_the_server(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin loads in every test run of every project that installs aiodbpool: a run that
    uses no ``postgres_server`` (here: ``postgres_url`` comes from ``$AIODBPOOL_TEST_DSN``)
    starts no server, and creates no system user (the one named here does not exist; the tests
    of PostgresServer show that it is the one a server would create as root)."""
    user = f"aiodbpool-{secrets.token_hex(4)}"
    monkeypatch.setenv(SERVER_USER_VARIABLE, user)
    mode = MODES["pytest-asyncio auto"]
    project.makeini(mode.ini())
    project.makepyfile(test_sample=mode.sample())
    result = project.runpytest("--setup-show", *mode.args())
    result.assert_outcomes(passed=mode.tests)
    result.stdout.fnmatch_lines(["*SETUP    S postgres_url*"])
    result.stdout.no_fnmatch_line("*postgres_server*")
    with pytest.raises(KeyError):
        pwd.getpwnam(user)


def test_the_plugin_is_registered_for_pytest_to_load() -> None:
    (entry,) = [
        entry
        for entry in importlib.metadata.entry_points(group="pytest11")
        if entry.value.startswith("aiodbpool")
    ]
    assert (entry.name, entry.value) == ("aiodbpool", "aiodbpool.integrations.testing.plugin")


def test_loading_the_plugin_imports_nothing_beyond_the_standard_library() -> None:
    """No optional package (pgserver, asyncpg, aiosqlite, pytest-asyncio, anyio) and no driver,
    not even the fake one: only the standard library and the pool's own modules."""
    probe = (
        "import sys, pytest\n"
        "before = set(sys.modules)\n"
        "import aiodbpool.integrations.testing.plugin\n"
        "new = set(sys.modules) - before\n"
        "outside = [n for n in new if n.partition('.')[0] not in sys.stdlib_module_names\n"
        "           and n.partition('.')[0] != 'aiodbpool']\n"
        "drivers = [n for n in new if n.startswith('aiodbpool.drivers')]\n"
        "print(sorted(outside), sorted(drivers))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[] []"
