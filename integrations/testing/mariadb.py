"""A throwaway MariaDB server for test suites, run from Debian's ``mariadb-server`` programs.

:class:`MariaDBServer` makes a data directory in a temporary directory and runs ``mariadbd`` the
way a real deployment looks to a client:

* TCP on ``127.0.0.1`` (a free port) with a password, for an application user that may do
  anything in the test database (and nothing elsewhere);
* a Unix socket in a short temporary path, where ``root`` logs in without a password, for admin
  statements (``KILL``, reading ``information_schema.PROCESSLIST``).

It is tuned for speed, not durability (no binary log, no doublewrite buffer, the redo log
flushed once a second, a small buffer pool), and has room for 200 connections. It needs the
``mariadbd`` and ``mariadb-install-db`` programs (Debian and Ubuntu: ``apt-get install
mariadb-server``, whose service need not run: the server here is started with ``--no-defaults``
and reads no system configuration). Its pytest fixture is ``mariadb_url`` in this repository's
``tests/conftest.py``.

When the tests run as root, ``mariadbd`` runs as the system user ``aiodbpool`` (or the one named
by ``$AIODBPOOL_TEST_SERVER_USER``), as :class:`~aiodbpool.integrations.testing.PostgresServer`
does, created if missing. Everything the server touches is in the temporary directory, so a clone
in a directory that user may not enter does not matter.

Every step that fails raises :class:`MariaDBServerError` with the end of the server's log. A
server that is not closed is stopped and deleted at interpreter exit, and, should the test
process die without running that, by a small watchdog process that notices it is gone.

Use it as a context manager, or call :meth:`MariaDBServer.start` and
:meth:`MariaDBServer.close`::

    with MariaDBServer() as server:
        conn = await asyncmy.connect(host=server.host, port=server.port, user=server.user,
                                     password=server.password, database=server.database)
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote

from ._servers import TIMEOUT as _TIMEOUT
from ._servers import (
    Watchdog,
    check_identifiers,
    environment,
    give_to,
    identity,
    log_section,
    run,
    scrubbed,
    server_account,
    tail,
)
from .postgres import SERVER_USER, SERVER_USER_VARIABLE, free_port

if TYPE_CHECKING:
    import pwd

__all__ = ["MariaDBServer", "MariaDBServerError", "mariadb_binaries"]

_SETTINGS = (
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    # A test server: speed over durability.
    "--skip-log-bin",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-innodb-use-native-aio",
)


class MariaDBServerError(RuntimeError):
    """A step of setting up or running the test server failed; the message ends with its log."""


MariaDBServerError.__module__ = "aiodbpool.integrations.testing"


def mariadb_binaries() -> tuple[Path, Path] | None:
    """The paths of ``mariadbd`` and ``mariadb-install-db``, or ``None`` when either is missing.

    Debian installs ``mariadbd`` in ``/usr/sbin``, which is not on every user's ``PATH``.
    """
    found: list[Path] = []
    for name, fallback in (("mariadbd", "/usr/sbin"), ("mariadb-install-db", "/usr/bin")):
        path = shutil.which(name) or shutil.which(name, path=fallback)
        if path is None:
            return None
        found.append(Path(path))
    return found[0], found[1]


def _client_binary() -> Path | None:
    """The ``mariadb`` command-line client (Debian: package ``mariadb-client``, which
    ``mariadb-server`` depends on)."""
    path = shutil.which("mariadb") or shutil.which("mysql")
    return None if path is None else Path(path)


class MariaDBServer:
    """A throwaway MariaDB server in a temporary directory, for tests.

    Nothing happens until :meth:`start`, which creates the data directory, starts ``mariadbd``
    and creates the application user and database. :meth:`close` stops the server and deletes
    the directory; it is safe to call more than once.

    ``timings`` holds how long each step took, in seconds: ``"install"`` (the system tables),
    ``"start"`` (until the server answers), ``"setup"`` (user and database), ``"stop"``.
    """

    def __init__(
        self,
        *,
        user: str = "app",
        password: str | None = None,
        database: str = "aiodbpool",
        max_connections: int = 200,
    ) -> None:
        check_identifiers("MariaDBServer", user=user, database=database)
        self._user = user
        # A fresh password for each server: tests read it from here, never hard-code it.
        self._password = password if password is not None else secrets.token_hex(12)
        self._database = database
        self._max_connections = max_connections
        # The account mariadbd runs as (None: this process's own), found at start.
        self._account: pwd.struct_passwd | None = None
        # The temporary directory holding everything; None before start and after close.
        self._base: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # Cleans up should this process die without calling close().
        self._watchdog = Watchdog()
        self._closed = False
        self.timings: dict[str, float] = {}

    # --- where to connect ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The TCP address the server listens on."""
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The server's TCP port."""
        if self._port is None:
            raise MariaDBServerError("the server has not been started: call start() first")
        return self._port

    @property
    def user(self) -> str:
        """The application user: logs in with :attr:`password`, may do anything in
        :attr:`database`."""
        return self._user

    @property
    def password(self) -> str:
        """The application user's password."""
        return self._password

    @property
    def database(self) -> str:
        """The test database."""
        return self._database

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket, where ``root`` logs in without a password."""
        return self._dir / "mysqld.sock"

    @property
    def url(self) -> str:
        """``mysql://`` URL of the application user, with its password, over TCP."""
        return (
            f"mysql://{quote(self._user)}:{quote(self._password, safe='')}"
            f"@{self.host}:{self.port}/{self._database}"
        )

    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        """The server's error log."""
        return self._dir / "mariadbd.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        return tail(self.log_path, lines)

    def __repr__(self) -> str:
        if self._base is None:
            return f"<MariaDBServer {'closed' if self._closed else 'not started'}>"
        return f"<MariaDBServer {self.host}:{self._port} dir={self._base}>"

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create and start the server; no-op when it runs."""
        if self._closed:
            raise MariaDBServerError("the server was closed; make a new MariaDBServer")
        if self._base is not None:
            return
        binaries = mariadb_binaries()
        client = _client_binary()
        if binaries is None or client is None:
            raise MariaDBServerError(
                "the throwaway MariaDB server needs the mariadbd, mariadb-install-db and mariadb "
                "programs: install them (Debian package 'mariadb-server'; its service need not "
                "run)"
            )
        mariadbd, install_db = binaries
        self._account = server_account(
            SERVER_USER,
            SERVER_USER_VARIABLE,
            refusal="MariaDBServer runs mariadbd as a system user when the tests run as root",
            error=MariaDBServerError,
        )
        self._port = free_port()
        self._base = Path(tempfile.mkdtemp(prefix="aiodbpool-my-"))
        atexit.register(self.close)
        try:
            if len(os.fsencode(self.socket_path)) > 107:
                raise MariaDBServerError(
                    f"Unix socket path too long: {self.socket_path}; set a shorter TMPDIR"
                )
            # The watchdog kills mariadbd and deletes the directory.
            self._watchdog.start(self._dir)
            self._install(install_db)
            self._run_server(mariadbd, client)
            self._set_up()
        except BaseException:
            self.close()
            raise

    def stop(self) -> None:
        """Stop the server (its clients are disconnected) and wait until it is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        began = time.perf_counter()
        process.terminate()  # SIGTERM: mariadbd shuts down cleanly
        try:
            process.wait(_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.timings["stop"] = time.perf_counter() - began

    @property
    def pid(self) -> int | None:
        """The process id of ``mariadbd``, or ``None`` when it is not running."""
        return self._process.pid if self.is_running() and self._process is not None else None

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        base = self._base
        if base is None:
            return
        try:
            self.stop()
        finally:
            self._base = None
            self._closed = True
            shutil.rmtree(base, ignore_errors=True)
            atexit.unregister(self.close)
            self._watchdog.stop()

    def __enter__(self) -> MariaDBServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- admin -----------------------------------------------------------------------------------

    def sql(self, statements: str) -> str:
        """Run ``statements`` as ``root`` over the Unix socket; return the client's tab-separated
        output, without column names.

        The statements go to the client's standard input, so a password in them never shows in
        the process list. A synchronous way in for set-up and checks outside an event loop.
        """
        client = _client_binary()
        if client is None:
            raise MariaDBServerError("the mariadb client program is not installed")
        result = self._run(
            [client, "--no-defaults", f"--socket={self.socket_path}", "--user=root",
             "--batch", "--skip-column-names"],
            what="mariadb",
            stdin=statements,
        )  # fmt: skip
        return result.stdout.strip()

    # --- creating the server ---------------------------------------------------------------------

    @property
    def _dir(self) -> Path:
        if self._base is None:
            raise MariaDBServerError(
                "the server has not been started, or was closed: call start() first (after "
                "close(), make a new MariaDBServer)"
            )
        return self._base

    def _install(self, install_db: Path) -> None:
        base = self._dir
        (base / "data").mkdir()
        (base / "tmp").mkdir()
        base.chmod(0o755)  # (mkdtemp made it 0700; the client reaches the socket through it)
        give_to(self._account, base)
        began = time.perf_counter()
        self._run(
            [install_db, "--no-defaults", f"--datadir={self.data_dir}",
             "--auth-root-authentication-method=normal", "--skip-test-db",
             "--skip-name-resolve", f"--tmpdir={base / 'tmp'}"],
            what="mariadb-install-db",
            as_server=True,
        )  # fmt: skip
        self.timings["install"] = time.perf_counter() - began

    def _run_server(self, mariadbd: Path, client: Path) -> None:
        base = self._dir
        began = time.perf_counter()
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C meant for pytest does not stop it under the fixtures.
            self._process = subprocess.Popen(
                [str(mariadbd), "--no-defaults", f"--datadir={self.data_dir}",
                 f"--socket={self.socket_path}", f"--port={self.port}",
                 f"--pid-file={base / 'mariadbd.pid'}", f"--tmpdir={base / 'tmp'}",
                 f"--log-error={self.log_path}", f"--max-connections={self._max_connections}",
                 *_SETTINGS],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=base,
                env=self._env(),
                start_new_session=True,
                **identity(self._account),
            )  # fmt: skip
        self._watchdog.notify(f"pid {self._process.pid}")
        deadline = time.monotonic() + _TIMEOUT
        # Answering a statement, not only accepting on the socket, means it finished starting.
        while not self._answers(client):
            if self._process.poll() is not None:
                self._process = None
                raise self._error(f"mariadbd exited at start:\n{self._log_section()}")
            if time.monotonic() > deadline:
                raise self._error(
                    f"mariadbd not answering after {_TIMEOUT}s\n{self._log_section()}"
                )
            time.sleep(0.01)
        self.timings["start"] = time.perf_counter() - began

    def _answers(self, client: Path) -> bool:
        if not self.socket_path.exists():
            return False
        probe = subprocess.run(
            [client, "--no-defaults", f"--socket={self.socket_path}", "--user=root",
             "--connect-timeout=5", "-e", "SELECT 1"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
        )  # fmt: skip
        return probe.returncode == 0

    def _set_up(self) -> None:
        began = time.perf_counter()
        password = self._password.replace("\\", "\\\\").replace("'", "\\'")
        self.sql(
            # root only over the Unix socket: mariadb-install-db also made root@127.0.0.1 and
            # root@::1 without a password.
            "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';\n"
            "FLUSH PRIVILEGES;\n"
            f"CREATE DATABASE {self._database};\n"
            f"CREATE USER '{self._user}'@'%' IDENTIFIED BY '{password}';\n"
            f"CREATE USER '{self._user}'@'localhost' IDENTIFIED BY '{password}';\n"
            f"GRANT ALL ON {self._database}.* TO '{self._user}'@'%';\n"
            f"GRANT ALL ON {self._database}.* TO '{self._user}'@'localhost';\n"
        )
        self.timings["setup"] = time.perf_counter() - began

    # --- running programs ------------------------------------------------------------------------

    def _run(
        self,
        args: Sequence[str | Path],
        *,
        what: str,
        stdin: str | None = None,
        as_server: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            args,
            what=what,
            cwd=self._dir,
            env=self._env(),
            account=self._account if as_server else None,
            log=self.log_path,
            error=self._error,
            stdin=stdin if stdin is not None else "",
        )

    def _log_section(self) -> str:
        return log_section(self.log_path)

    def _error(self, message: str) -> MariaDBServerError:
        """A ``MariaDBServerError`` whose message shows no piece of the application password."""
        return scrubbed(MariaDBServerError, self._password, message)

    def _env(self) -> dict[str, str]:
        # No MYSQL_* / MARIADB_* variables from the caller's environment may steer the programs.
        return environment(self._account, self._dir, drop=("MYSQL", "MARIADB"))
