"""aiodbpool.integrations.testing: what a test suite needs to test code that uses a pool.

* A pytest plugin (:mod:`aiodbpool.integrations.testing.plugin`), loaded by pytest in every
  project that installs aiodbpool, whose fixtures need no import: ``fake_pool``, ``postgres_url``,
  ``postgres_pool``, ``sqlite_pool`` and the fixtures they are built from. See the testing guide.
* :class:`FakePool`: what ``fake_pool`` gives a test, a pool on a
  :class:`~aiodbpool.drivers.fake.FakeDriver` whose driver and clock it keeps typed.
* :class:`PostgresServer`: the throwaway PostgreSQL server that ``postgres_server`` runs, from the
  binaries of the ``pgserver`` package (``pip install 'aiodbpool[testing]'``).
* :class:`MariaDBServer`: a throwaway MariaDB server, from Debian's ``mariadb-server`` programs
  (no plugin fixture runs it; aiodbpool's own tests have ``mariadb_url`` in their conftest).

Importing this package (as pytest does, for the plugin, in every test run) imports nothing but
the pool's core: each class is imported when first used, and whatever needs an optional package
(pgserver, asyncpg, aiosqlite, pytest-asyncio, anyio) imports it then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._pools import FakePool
    from .mariadb import MariaDBServer, MariaDBServerError
    from .postgres import PostgresServer, PostgresServerError

__all__ = [
    "TEST_DSN_VARIABLE",
    "FakePool",
    "MariaDBServer",
    "MariaDBServerError",
    "PostgresServer",
    "PostgresServerError",
]

TEST_DSN_VARIABLE = "AIODBPOOL_TEST_DSN"
"""The environment variable that points ``postgres_url`` at a server of your own."""


def __getattr__(name: str) -> object:
    # Imported on first use (PEP 562): a test run that uses none of them imports none of them.
    if name == "FakePool":
        from ._pools import FakePool

        return FakePool
    if name in ("PostgresServer", "PostgresServerError"):
        from . import postgres

        return getattr(postgres, name)
    if name in ("MariaDBServer", "MariaDBServerError"):
        from . import mariadb

        return getattr(mariadb, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
