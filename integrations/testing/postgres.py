"""A throwaway PostgreSQL server for test suites, run from the binaries of the ``pgserver`` package.

:class:`PostgresServer` makes a database cluster in a temporary directory and runs it the way a
real deployment looks to a client:

* TCP on ``127.0.0.1`` (a free port, kept across restarts) with ``scram-sha-256`` passwords,
  for an application role that owns the test database and may create tables in it;
* a Unix socket in the cluster's own directory, where the superuser ``postgres`` is trusted, for
  admin queries (terminating connections, reading ``pg_stat_activity``);
* optionally pgbouncer in front of it (:meth:`PostgresServer.start_pgbouncer`).

It is tuned for speed, not durability (``fsync``, ``synchronous_commit`` and ``full_page_writes``
off), and has room for 200 connections. It needs the ``pgserver`` package
(``pip install 'aiodbpool[testing]'``), and is what the pytest plugin's ``postgres_server``
fixture runs (see :mod:`aiodbpool.integrations.testing.plugin`).

PostgreSQL and pgbouncer refuse to run as root: when the tests run as root, both run as the system
user ``aiodbpool`` (or the one named by ``$AIODBPOOL_TEST_SERVER_USER``), created by the first
:meth:`~PostgresServer.start` if it does not exist; nothing else creates it. If that user may not
enter the directories of the installed ``pgserver`` (a clone in a home directory of mode 0700, or
in ``mktemp -d``), the server runs a copy of its programs kept in the temporary directory; the
user's own directories are left as they are.

Every step that fails raises :class:`PostgresServerError` with the end of the server's log, so a
CI log says why. A server that is not closed is stopped and deleted at interpreter exit, and,
should the test process die without running that (``SIGKILL``, a crash), by a small watchdog
process that notices the test process is gone.

Use it as a context manager, or call :meth:`PostgresServer.start` and
:meth:`PostgresServer.close`::

    with PostgresServer() as server:
        conn = await asyncpg.connect(server.dsn)
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeAlias
from urllib.parse import quote

from ._servers import TIMEOUT as _TIMEOUT
from ._servers import (
    Watchdog,
    check_identifiers,
    environment,
    give_to,
    identity,
    run,
    scrubbed,
    server_account,
    tail,
)

if TYPE_CHECKING:
    import pwd  # (imported when needed: the module also imports where there is no pwd)

__all__ = [
    "SERVER_USER",
    "SERVER_USER_VARIABLE",
    "PoolMode",
    "PostgresServer",
    "PostgresServerError",
    "StopMode",
    "free_port",
    "pgbouncer_binary",
    "postgres_bin_dir",
]

StopMode: TypeAlias = Literal["smart", "fast", "immediate"]
"""``pg_ctl stop -m``: wait for clients to leave; disconnect them; or abort like a crash."""

PoolMode: TypeAlias = Literal["session", "transaction", "statement"]
"""pgbouncer's ``pool_mode``."""

SERVER_USER = "aiodbpool"
"""The system user that runs PostgreSQL and pgbouncer when the tests run as root."""

SERVER_USER_VARIABLE = "AIODBPOOL_TEST_SERVER_USER"
"""The environment variable naming another system user than :data:`SERVER_USER` (one that exists
already, for a system without ``useradd``)."""

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "password_encryption": "'scram-sha-256'",
    # A test server: speed over durability.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "dynamic_shared_memory_type": "mmap",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}


class PostgresServerError(RuntimeError):
    """A step of setting up or running the test server failed; the message ends with its log."""


PostgresServerError.__module__ = "aiodbpool.integrations.testing"


def postgres_bin_dir() -> Path:
    """The directory of the PostgreSQL programs (initdb, pg_ctl, psql) that pgserver ships.

    Found without importing pgserver, whose import has side effects (lock files, warnings).
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise PostgresServerError(
            "the throwaway PostgreSQL server runs pgserver's programs, and the 'pgserver' package "
            "is not installed: pip install 'aiodbpool[testing]' (or pgserver); or set "
            "AIODBPOOL_TEST_DSN to a server of your own for the tests that need only its URL"
        )
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").is_file():
        raise PostgresServerError(
            f"pgserver is installed but has no PostgreSQL programs in {bin_dir}: reinstall it "
            "(pip install --force-reinstall pgserver), or pass bin_dir= to PostgresServer"
        )
    return bin_dir


def pgbouncer_binary() -> str | None:
    """The path of the ``pgbouncer`` program, or ``None`` when it is not installed.

    Debian installs it in ``/usr/sbin``, which is not on every user's ``PATH``.
    """
    found = shutil.which("pgbouncer")
    if found is None and os.access("/usr/sbin/pgbouncer", os.X_OK):
        found = "/usr/sbin/pgbouncer"
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _reachable(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` may enter every directory from ``/`` down to ``path``."""
    for folder in (path, *path.parents):
        info = folder.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _runnable_bin_dir(bin_dir: Path, account: pwd.struct_passwd | None) -> Path:
    """``bin_dir``, or the same programs copied where the server's account can run them.

    As root the servers run as ``SERVER_USER``, which cannot run programs inside a directory it
    may not enter: a clone in a home directory of mode 0700, or in ``mktemp -d``. Rather than
    change the permissions of the user's own directories, the PostgreSQL install is copied once
    into the temporary directory, under a name that changes with the install, and shared by
    later sessions. Its programs find their libraries relative to themselves (``$ORIGIN``), in
    ``pginstall/lib`` and in the wheel's ``pgserver.libs`` beside the package: the copy keeps
    that layout, ``pgserver/pginstall`` and ``pgserver.libs``.
    """
    if account is None or _reachable(bin_dir, account):
        return bin_dir
    install = bin_dir.parent  # .../pgserver/pginstall
    package = install.parent
    wheel_libs = package.parent / f"{package.name}.libs"
    postgres = (bin_dir / "postgres").stat()
    key = hashlib.sha256(f"{install}|{postgres.st_size}|{postgres.st_mtime_ns}".encode())
    copy = Path(tempfile.gettempdir()) / f"aiodbpool-pginstall-{key.hexdigest()[:16]}"
    copied_bin = copy / package.name / install.name / bin_dir.name
    if not (copied_bin / "pg_ctl").is_file():
        staging = Path(tempfile.mkdtemp(prefix="aiodbpool-pginstall-"))
        try:
            shutil.copytree(install, staging / package.name / install.name, symlinks=True)
            if wheel_libs.is_dir():
                shutil.copytree(wheel_libs, staging / wheel_libs.name, symlinks=True)
            staging.chmod(0o755)  # (mkdtemp made it 0700)
            os.rename(staging, copy)  # whole or not at all: another session may race us
        except OSError:
            if not (copied_bin / "pg_ctl").is_file():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return copied_bin


class PostgresServer:
    """A throwaway PostgreSQL server in a temporary directory, for tests.

    Nothing happens until :meth:`start`, which creates the database cluster the first time
    (``initdb``, configuration, the application role and database) and starts the server. The
    TCP port is chosen then and kept: :meth:`restart`, and :meth:`stop` followed by
    :meth:`start`, bring the server back where existing DSNs point. :meth:`close` stops
    everything and deletes the directory; it is safe to call more than once.

    ``timings`` holds how long the last run of each step took, in seconds: ``"initdb"``,
    ``"start"``, ``"stop"``, ``"restart"``, ``"pgbouncer"``.
    """

    def __init__(
        self,
        *,
        user: str = "app",
        password: str | None = None,
        database: str = "aiodbpool",
        max_connections: int = 200,
        bin_dir: Path | None = None,
    ) -> None:
        check_identifiers("PostgresServer", user=user, database=database)
        self._user = user
        # A fresh password for each cluster: tests read it from here, never hard-code it.
        self._password = password if password is not None else secrets.token_hex(12)
        self._database = database
        self._max_connections = max_connections
        self._bin = bin_dir or postgres_bin_dir()
        # The account the servers run as (None: this process's own), found at the first start.
        self._account: pwd.struct_passwd | None = None
        # The temporary directory holding everything; None before the first start and after close.
        self._base: Path | None = None
        # The server's TCP port, chosen at the first start and kept for the cluster's life.
        self._port: int | None = None
        # pgbouncer: its process while it runs, its pool mode, and its port, kept once chosen.
        self._bouncer: subprocess.Popen[bytes] | None = None
        self._bouncer_mode: PoolMode | None = None
        self._bouncer_port: int | None = None
        # Cleans up should this process die without calling close().
        self._watchdog = Watchdog()
        self.timings: dict[str, float] = {}

    # --- where to connect ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The TCP address the server listens on."""
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The server's TCP port (also the number in its Unix socket's name)."""
        if self._port is None:
            raise PostgresServerError("the server has not been started: call start() first")
        return self._port

    @property
    def user(self) -> str:
        """The application role: logs in with :attr:`password`, owns :attr:`database`."""
        return self._user

    @property
    def password(self) -> str:
        """The application role's password."""
        return self._password

    @property
    def database(self) -> str:
        """The test database, owned by :attr:`user`."""
        return self._database

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's Unix socket."""
        return self._dir / "socket"

    @property
    def dsn(self) -> str:
        """``postgresql://`` URL of the application role, with its password, over TCP."""
        return (
            f"postgresql://{quote(self._user)}:{quote(self._password, safe='')}"
            f"@{self.host}:{self.port}/{self._database}"
        )

    @property
    def admin_dsn(self) -> str:
        """``postgresql://`` URL of the superuser ``postgres`` over the Unix socket, no password."""
        return f"postgresql://postgres@/{self._database}?host={self.socket_dir}&port={self.port}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (``postgresql.conf``, ``pg_hba.conf``, ...)."""
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._dir / "postgres.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        return tail(self.log_path, lines)

    def __repr__(self) -> str:
        if self._base is None:
            return f"<PostgresServer {'closed' if self._port is not None else 'not started'}>"
        bouncer = f" pgbouncer={self._bouncer_port}" if self._bouncer is not None else ""
        return f"<PostgresServer {self.host}:{self._port} dir={self._base}{bouncer}>"

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (creating the cluster on the first call); no-op when it runs."""
        if self._base is None:
            if self._port is not None:
                raise PostgresServerError("the server was closed; make a new PostgresServer")
            self._create()
            return
        if self.is_running():
            return
        began = time.perf_counter()
        self._pg_ctl("start", "-l", self.log_path, "-w", "-t", str(int(_TIMEOUT)))
        self.timings["start"] = time.perf_counter() - began

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait until it is gone; no-op when it is not running.

        ``"fast"`` disconnects the clients (they see ``admin_shutdown``); ``"immediate"`` ends
        every process at once, like a crash (the next start recovers); ``"smart"`` waits for the
        clients to leave.
        """
        if self._base is None or not self.is_running():
            return
        began = time.perf_counter()
        self._pg_ctl("stop", "-m", mode, "-w", "-t", str(int(_TIMEOUT)))
        self.timings["stop"] = time.perf_counter() - began

    def restart(self, mode: StopMode = "fast") -> None:
        """:meth:`stop` then :meth:`start`, on the same port: existing DSNs stay valid."""
        began = time.perf_counter()
        self.stop(mode)
        self.start()
        self.timings["restart"] = time.perf_counter() - began

    def is_running(self) -> bool:
        """Whether the server process is alive (it may still be starting or stopping)."""
        if self._base is None:
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        return self._pg_ctl("status", check=False).returncode == 0

    def close(self) -> None:
        """Stop pgbouncer and the server, and delete the cluster's directory. Idempotent."""
        base = self._base
        if base is None:
            return
        try:
            self.stop_pgbouncer()
            try:
                self.stop("fast")
            except PostgresServerError:
                self.stop("immediate")
        finally:
            self._base = None
            shutil.rmtree(base, ignore_errors=True)
            atexit.unregister(self.close)
            self._watchdog.stop()

    def __enter__(self) -> PostgresServer:
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

    def psql(self, sql: str, *, database: str | None = None) -> str:
        """Run ``sql`` as the superuser over the Unix socket, in :attr:`database` unless another
        is named; return psql's unaligned output.

        A synchronous way in for set-up and checks outside an event loop; in async tests prefer
        ``asyncpg.connect(server.admin_dsn)``.
        """
        result = self._run(
            [self._bin / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.socket_dir, "-p", str(self.port), "-U", "postgres",
             "-d", database or self._database, "-c", sql],
            what=f"psql -c {sql!r}",
            as_server=False,
        )  # fmt: skip
        return result.stdout.strip()

    def terminate_connections(self, user: str | None = None) -> int:
        """End every connection of ``user`` (default: the application role), as an
        administrator's ``pg_terminate_backend`` does; return how many there were."""
        role = user if user is not None else self._user
        out = self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE usename = '{role}' AND pid <> pg_backend_pid()"
        )
        return int(out)

    # --- pgbouncer -------------------------------------------------------------------------------

    def start_pgbouncer(self, pool_mode: PoolMode = "transaction") -> str:
        """Start pgbouncer in front of the server and return the DSN through it.

        pgbouncer listens on 127.0.0.1 on a port of its own (kept if it is started again), checks
        the application role's password with ``scram-sha-256``, and pools server connections in
        ``pool_mode``. If it already runs in that mode, only the DSN is returned; in another
        mode, it is stopped (its clients disconnected) and started again in the new one.
        :meth:`close` stops it.

        Through pgbouncer 1.18 in transaction mode, asyncpg needs ``statement_cache_size=0``:
        named prepared statements do not survive a change of server connection.
        """
        binary = pgbouncer_binary()
        if binary is None:
            raise PostgresServerError(
                "start_pgbouncer() needs the pgbouncer program, which is not installed: install "
                "it (Debian package 'pgbouncer')"
            )
        self.start()
        if self._bouncer is not None:
            if self._bouncer.poll() is None and self._bouncer_mode == pool_mode:
                return self._bouncer_dsn()
            self.stop_pgbouncer()
        if self._bouncer_port is None:
            self._bouncer_port = free_port()
        self._bouncer_mode = pool_mode
        config = self._write_pgbouncer_config(pool_mode)
        log = self._dir / "pgbouncer.log"
        began = time.perf_counter()
        with log.open("ab") as log_file:
            # Its own session: a Ctrl-C meant for pytest does not reach it; close() stops it.
            self._bouncer = subprocess.Popen(
                [binary, str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                env=self._env(),
                start_new_session=True,
                **identity(self._account),
            )
        self._watchdog.notify(f"pid {self._bouncer.pid}")
        deadline = time.monotonic() + _TIMEOUT
        while not self._accepts(self._bouncer_port):
            if self._bouncer.poll() is not None:
                self._bouncer = None
                raise self._error(f"pgbouncer exited at start:\n{tail(log, 40)}")
            if time.monotonic() > deadline:
                self.stop_pgbouncer()
                raise self._error(f"pgbouncer not listening after {_TIMEOUT}s:\n{tail(log, 40)}")
            time.sleep(0.01)
        self.timings["pgbouncer"] = time.perf_counter() - began
        return self._bouncer_dsn()

    def stop_pgbouncer(self) -> None:
        """Stop pgbouncer (its clients are disconnected); no-op when it is not running."""
        bouncer, self._bouncer = self._bouncer, None
        if bouncer is None:
            return
        bouncer.terminate()  # SIGTERM: pgbouncer shuts down at once
        try:
            bouncer.wait(_TIMEOUT)
        except subprocess.TimeoutExpired:
            bouncer.kill()
            bouncer.wait()

    def _bouncer_dsn(self) -> str:
        return (
            f"postgresql://{quote(self._user)}:{quote(self._password, safe='')}"
            f"@{self.host}:{self._bouncer_port}/{self._database}"
        )

    def _write_pgbouncer_config(self, pool_mode: PoolMode) -> Path:
        folder = self._dir / "pgbouncer"
        folder.mkdir(exist_ok=True)
        userlist = folder / "userlist.txt"
        # pgbouncer needs the plain password: it answers the client's SCRAM exchange and logs in
        # to PostgreSQL with it.
        userlist.write_text(f'"{self._user}" "{self._password}"\n')
        userlist.chmod(0o600)
        config = folder / "pgbouncer.ini"
        config.write_text(
            f"""\
[databases]
{self._database} = host={self.host} port={self.port} dbname={self._database}

[pgbouncer]
listen_addr = {self.host}
listen_port = {self._bouncer_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
pool_mode = {pool_mode}
max_client_conn = 500
default_pool_size = 20
; after a server restart, log in again within a second rather than the default 15
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
"""
        )
        give_to(self._account, folder)
        return config

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            return False

    # --- creating the cluster --------------------------------------------------------------------

    @property
    def _dir(self) -> Path:
        if self._base is None:
            raise PostgresServerError(
                "the server has not been started, or was closed: call start() first (after "
                "close(), make a new PostgresServer)"
            )
        return self._base

    def _create(self) -> None:
        self._account = server_account(
            SERVER_USER,
            SERVER_USER_VARIABLE,
            refusal="PostgreSQL refuses to run as root",
            error=PostgresServerError,
        )
        self._bin = _runnable_bin_dir(self._bin, self._account)
        self._port = free_port()
        self._base = Path(tempfile.mkdtemp(prefix="aiodbpool-pg-"))
        atexit.register(self.close)
        # The watchdog stops a server left running (its postmaster.pid exists) and deletes
        # the directory; it also kills a pgbouncer that was started.
        self._watchdog.start(
            self._dir,
            account=self._account,
            stop=(
                self.data_dir / "postmaster.pid",
                [self._bin / "pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", "-w"],
            ),
        )
        try:
            self._initdb()
            began = time.perf_counter()
            self._pg_ctl("start", "-l", self.log_path, "-w", "-t", str(int(_TIMEOUT)))
            self.timings["start"] = time.perf_counter() - began
            password = self._password.replace("'", "''")
            self.psql(f"CREATE ROLE {self._user} LOGIN PASSWORD '{password}'", database="postgres")
            self.psql(f"CREATE DATABASE {self._database} OWNER {self._user}", database="postgres")
        except BaseException:
            self.close()
            raise

    def _initdb(self) -> None:
        base = self._dir
        (base / "socket").mkdir()
        # The server user owns the whole tree; we (root) can read it anyway.
        base.chmod(0o755)
        give_to(self._account, base)
        socket_file = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(os.fsencode(socket_file)) > 107:
            raise PostgresServerError(
                f"Unix socket path too long: {socket_file}; set a shorter TMPDIR"
            )
        began = time.perf_counter()
        self._run(
            [self._bin / "initdb", "-D", base / "data", "-U", "postgres", "--no-locale",
             "-E", "UTF8", "--no-sync", "--no-instructions", "--auth=trust"],
            what="initdb",
        )  # fmt: skip
        self.timings["initdb"] = time.perf_counter() - began
        settings = {
            **_SETTINGS,
            "port": str(self.port),
            "max_connections": str(self._max_connections),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (base / "data" / "postgresql.conf").open("a") as conf:
            conf.write("\n# aiodbpool test cluster\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        (base / "data" / "pg_hba.conf").write_text(
            "# TYPE  DATABASE  USER      ADDRESS        METHOD\n"
            "local   all       postgres                 trust\n"
            "local   all       all                      scram-sha-256\n"
            "host    all       all       127.0.0.1/32   scram-sha-256\n"
        )

    # --- running programs ------------------------------------------------------------------------

    def _pg_ctl(
        self, action: str, *args: str | Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run(
            [self._bin / "pg_ctl", action, "-D", self.data_dir, *args],
            what=f"pg_ctl {action}",
            check=check,
        )

    def _run(
        self,
        args: Sequence[str | Path],
        *,
        what: str,
        check: bool = True,
        as_server: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            args,
            what=what,
            cwd=self._dir,
            env=self._env(),
            account=self._account if as_server else None,
            log=self.log_path,
            error=self._error,
            check=check,
        )

    def _error(self, message: str) -> PostgresServerError:
        """A ``PostgresServerError`` whose message, which may quote a statement, a program's
        output or a log, shows no piece of the application role's password."""
        return scrubbed(PostgresServerError, self._password, message)

    def _env(self) -> dict[str, str]:
        # No PG* variables from the caller's environment (PGHOST, PGDATA, ...) may steer the tools.
        return environment(self._account, self._dir, drop=("PG",))
