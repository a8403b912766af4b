"""The PostgreSQL test tooling itself (tests/pgcluster.py and the fixtures in conftest.py).

The driver tests rely on these properties of the test server: a password is checked over TCP,
the superuser gets in over the Unix socket, a restart keeps the port, and pgbouncer passes
queries through in transaction mode.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import asyncpg
import pytest
from pgcluster import PgCluster, PgClusterError, postgres_bin_dir


async def test_the_app_role_logs_in_with_its_password_over_tcp(pg_cluster: PgCluster) -> None:
    assert pg_cluster.dsn.startswith(f"postgresql://app:{pg_cluster.password}@127.0.0.1:")
    conn = await asyncpg.connect(pg_cluster.dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == pg_cluster.user
        assert await conn.fetchval("SELECT inet_server_port()") == pg_cluster.port
        assert int(await conn.fetchval("SHOW max_connections")) >= 200
        # The role may create tables in its database.
        await conn.execute("CREATE TABLE pgcluster_probe (n int)")
        await conn.execute("DROP TABLE pgcluster_probe")
    finally:
        await conn.close()


async def test_a_wrong_password_is_refused(pg_cluster: PgCluster) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host=pg_cluster.host,
            port=pg_cluster.port,
            user=pg_cluster.user,
            password=pg_cluster.password + "x",
            database=pg_cluster.database,
        )
    # Over TCP even the superuser needs a password (it has none, so it cannot log in there).
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host=pg_cluster.host, port=pg_cluster.port, user="postgres", database="postgres"
        )


async def test_the_superuser_gets_in_over_the_unix_socket(pg_cluster: PgCluster) -> None:
    conn = await asyncpg.connect(pg_cluster.admin_dsn)
    try:
        assert await conn.fetchval("SELECT current_setting('is_superuser')") == "on"
        assert await conn.fetchval("SELECT inet_server_addr()") is None  # not TCP
    finally:
        await conn.close()
    assert pg_cluster.psql("SELECT current_user") == "postgres"


async def test_restart_keeps_the_port_and_the_dsn(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.dsn
    conn = await asyncpg.connect(dsn)
    pid = conn.get_server_pid()
    pg_cluster.restart()
    assert pg_cluster.dsn == dsn
    assert pg_cluster.is_running()
    # The restart ended the old session; a new one gets in through the same DSN.
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    conn = await asyncpg.connect(dsn)
    try:
        assert conn.get_server_pid() != pid
    finally:
        await conn.close()


async def test_a_stopped_server_refuses_connections_until_started(pg_cluster: PgCluster) -> None:
    pg_cluster.stop("immediate")
    assert not pg_cluster.is_running()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(pg_cluster.dsn)
    pg_cluster.start()
    conn = await asyncpg.connect(pg_cluster.dsn)
    await conn.close()


async def test_terminate_connections_ends_the_app_sessions(pg_cluster: PgCluster) -> None:
    conn = await asyncpg.connect(pg_cluster.dsn)
    assert pg_cluster.terminate_connections() >= 1
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()


async def test_pgbouncer_passes_queries_in_transaction_mode(
    pgbouncer_dsn: str, pg_cluster: PgCluster
) -> None:
    assert f":{pg_cluster.port}/" not in pgbouncer_dsn
    # Named prepared statements do not survive pgbouncer's change of server connection.
    conn = await asyncpg.connect(pgbouncer_dsn, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_user") == pg_cluster.user
        async with conn.transaction():
            await conn.execute("SET LOCAL application_name = 'through pgbouncer'")
            assert await conn.fetchval("SHOW application_name") == "through pgbouncer"
    finally:
        await conn.close()
    # pgbouncer 1.18 reports a failed SCRAM exchange as a protocol violation.
    with pytest.raises(asyncpg.PostgresError, match=r"SASL authentication failed|password"):
        await asyncpg.connect(pgbouncer_dsn.replace(pg_cluster.password, "wrong"))


def test_close_stops_everything_and_deletes_the_directory() -> None:
    cluster = PgCluster(password="it's a secret")
    with cluster:
        directory = cluster.socket_dir.parent
        assert cluster.is_running()
        assert "it%27s%20a%20secret@" in cluster.dsn
    assert not directory.exists()
    assert not cluster.is_running()
    cluster.close()  # idempotent


def test_a_failed_start_says_why_from_the_server_log() -> None:
    with PgCluster() as cluster:
        cluster.stop()
        with (cluster.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("max_connections = plenty\n")
        with pytest.raises(PgClusterError, match=r"(?s)pg_ctl start failed.*max_connections"):
            cluster.start()


async def test_the_server_runs_from_a_clone_inside_a_private_directory(tmp_path: Path) -> None:
    """A clone in a 0700 directory (a home directory, ``mktemp -d``): as root, the server runs as
    another account, which may not enter it. The cluster then runs a copy of the programs, and
    the user's directory keeps its mode."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    installed = postgres_bin_dir().parent.parent  # .../site-packages/pgserver
    site = private / "site-packages"
    shutil.copytree(installed / "pginstall", site / "pgserver" / "pginstall", symlinks=True)
    libs = installed.parent / "pgserver.libs"  # where the wheel keeps the shared libraries
    if libs.is_dir():
        shutil.copytree(libs, site / "pgserver.libs", symlinks=True)

    with PgCluster(bin_dir=site / "pgserver" / "pginstall" / "bin") as cluster:
        conn = await asyncpg.connect(cluster.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
