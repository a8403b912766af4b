"""The throwaway MariaDB server (aiodbpool.integrations.testing.MariaDBServer) that the MySQL
driver's tests run on."""

from __future__ import annotations

import os
from pathlib import Path

import asyncmy
import pytest

from aiodbpool.integrations.testing import MariaDBServer, MariaDBServerError


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")


def test_the_server_runs_as_another_user_than_root(mariadb_server: MariaDBServer) -> None:
    pid = mariadb_server.pid
    assert pid is not None
    if os.geteuid() == 0:
        assert _uid_of(pid) != 0
    else:
        assert _uid_of(pid) == os.geteuid()
    assert len(os.fsencode(mariadb_server.socket_path)) <= 107


async def test_the_application_user_logs_in_with_its_password_over_tcp(
    mariadb_server: MariaDBServer,
) -> None:
    server = mariadb_server
    conn = await asyncmy.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        database=server.database,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT DATABASE(), @@character_set_server")
            assert await cursor.fetchone() == (server.database, "utf8mb4")
    finally:
        await conn.ensure_closed()
    with pytest.raises(asyncmy.errors.OperationalError, match="Access denied"):
        await asyncmy.connect(host=server.host, port=server.port, user="root")


def test_the_admin_runs_statements_over_the_unix_socket(mariadb_server: MariaDBServer) -> None:
    assert mariadb_server.sql("SELECT CURRENT_USER()") == "root@localhost"


def test_close_deletes_everything_and_a_closed_server_does_not_start_again(
    mariadb_server: MariaDBServer,
) -> None:
    server = MariaDBServer(user="other", database="other")
    server.start()
    try:
        base = server.data_dir.parent
        assert base.is_dir()
        assert set(server.timings) >= {"install", "start", "setup"}
        assert server.password not in repr(server)
    finally:
        server.close()
    server.close()  # a second close does nothing
    assert not base.exists()
    assert repr(server) == "<MariaDBServer closed>"
    with pytest.raises(MariaDBServerError, match="make a new MariaDBServer"):
        server.start()


def test_names_that_are_not_plain_identifiers_are_refused() -> None:
    with pytest.raises(ValueError, match="plain lowercase SQL identifier"):
        MariaDBServer(user="app; DROP")
