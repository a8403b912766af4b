"""The throwaway PostgreSQL server (aiodbpool.integrations.testing.PostgresServer), and
pgbouncer in front of it.

The driver tests, and the tests of users' apps, rely on these properties of the test server: a
password is checked over TCP, the superuser gets in over the Unix socket, a restart keeps the
port, it runs as root from a clone in a private directory, and pgbouncer passes queries through
in transaction mode.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import asyncpg
import pytest

from aiodbpool.integrations.testing import PostgresServer, PostgresServerError
from aiodbpool.integrations.testing.postgres import SERVER_USER_VARIABLE, postgres_bin_dir


async def test_the_app_role_logs_in_with_its_password_over_tcp(
    postgres_server: PostgresServer,
) -> None:
    assert postgres_server.dsn.startswith(f"postgresql://app:{postgres_server.password}@127.0.0.1:")
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == postgres_server.user
        assert await conn.fetchval("SELECT inet_server_port()") == postgres_server.port
        assert int(await conn.fetchval("SHOW max_connections")) >= 200
        # The role may create tables in its database.
        await conn.execute("CREATE TABLE server_probe (n int)")
        await conn.execute("DROP TABLE server_probe")
    finally:
        await conn.close()


async def test_a_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            password=postgres_server.password + "x",
            database=postgres_server.database,
        )
    # Over TCP even the superuser needs a password (it has none, so it cannot log in there).
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user="postgres",
            database="postgres",
        )


async def test_the_superuser_gets_in_over_the_unix_socket(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        assert await conn.fetchval("SELECT current_setting('is_superuser')") == "on"
        assert await conn.fetchval("SELECT inet_server_addr()") is None  # not TCP
    finally:
        await conn.close()
    assert postgres_server.psql("SELECT current_user") == "postgres"


async def test_restart_keeps_the_port_and_the_dsn(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn
    conn = await asyncpg.connect(dsn)
    pid = conn.get_server_pid()
    postgres_server.restart()
    assert postgres_server.dsn == dsn
    assert postgres_server.is_running()
    # The restart ended the old session; a new one gets in through the same DSN.
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    conn = await asyncpg.connect(dsn)
    try:
        assert conn.get_server_pid() != pid
    finally:
        await conn.close()


async def test_a_stopped_server_refuses_connections_until_started(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.stop("immediate")
    assert not postgres_server.is_running()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(postgres_server.dsn)
    postgres_server.start()
    conn = await asyncpg.connect(postgres_server.dsn)
    await conn.close()


async def test_terminate_connections_ends_the_app_sessions(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    assert postgres_server.terminate_connections() >= 1
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()


async def test_pgbouncer_passes_queries_in_transaction_mode(
    pgbouncer_dsn: str, postgres_server: PostgresServer
) -> None:
    assert f":{postgres_server.port}/" not in pgbouncer_dsn
    # Named prepared statements do not survive pgbouncer's change of server connection.
    conn = await asyncpg.connect(pgbouncer_dsn, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_user") == postgres_server.user
        async with conn.transaction():
            await conn.execute("SET LOCAL application_name = 'through pgbouncer'")
            assert await conn.fetchval("SHOW application_name") == "through pgbouncer"
    finally:
        await conn.close()
    # pgbouncer 1.18 reports a failed SCRAM exchange as a protocol violation.
    with pytest.raises(asyncpg.PostgresError, match=r"SASL authentication failed|password"):
        await asyncpg.connect(pgbouncer_dsn.replace(postgres_server.password, "wrong"))


def test_close_stops_everything_and_deletes_the_directory() -> None:
    server = PostgresServer(password="it's a secret")
    with server:
        directory = server.socket_dir.parent
        assert server.is_running()
        assert "it%27s%20a%20secret@" in server.dsn
    assert not directory.exists()
    assert not server.is_running()
    server.close()  # idempotent


def test_a_failed_start_says_why_from_the_server_log() -> None:
    with PostgresServer() as server:
        server.stop()
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("max_connections = plenty\n")
        with pytest.raises(PostgresServerError, match=r"(?s)pg_ctl start failed.*max_connections"):
            server.start()


def test_a_failed_step_quotes_no_piece_of_the_password(postgres_server: PostgresServer) -> None:
    """The statement, psql's output and the server's log may all quote the password (as the
    CREATE ROLE of a first start does): the error shows none of it."""
    password = postgres_server.password
    with pytest.raises(PostgresServerError, match=r"(?s)psql -c .*failed.*\*\*\*") as caught:
        postgres_server.psql(f"SELECT '{password}'::int")
    assert password[:6] not in str(caught.value)
    assert password[-6:] not in str(caught.value)


async def test_the_server_runs_from_a_clone_inside_a_private_directory(tmp_path: Path) -> None:
    """A clone in a 0700 directory (a home directory, ``mktemp -d``): as root, the server runs as
    another account, which may not enter it. The server then runs a copy of the programs, and
    the user's directory keeps its mode."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    installed = postgres_bin_dir().parent.parent  # .../site-packages/pgserver
    site = private / "site-packages"
    shutil.copytree(installed / "pginstall", site / "pgserver" / "pginstall", symlinks=True)
    libs = installed.parent / "pgserver.libs"  # where the wheel keeps the shared libraries
    if libs.is_dir():
        shutil.copytree(libs, site / "pgserver.libs", symlinks=True)

    with PostgresServer(bin_dir=site / "pgserver" / "pginstall" / "bin") as server:
        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_the_system_user_it_runs_as_may_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, PostgreSQL runs as a system user: ``aiodbpool``, or the one that
    ``$AIODBPOOL_TEST_SERVER_USER`` names. One that cannot be created fails the start, naming
    the variable; without root the server runs as the current user, and the variable is unused."""
    monkeypatch.setenv(SERVER_USER_VARIABLE, "not a user name!")
    server = PostgresServer()
    try:
        if os.geteuid() == 0:
            with pytest.raises(
                PostgresServerError, match=rf"not a user name!.*{SERVER_USER_VARIABLE}"
            ):
                server.start()
        else:
            server.start()
            assert server.psql("SELECT 1") == "1"
    finally:
        server.close()
