"""What the throwaway test servers (:mod:`.postgres`, :mod:`.mariadb`) share.

The account their programs run as when the tests run as root, running a program with a timeout
and an error that ends with the server's log, the programs' environment, the log's tail, and the
watchdog that cleans up after a test process that died without closing its server. Each server
module keeps only what is specific to its database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeVar

from aiodbpool.redaction import Secrets

if TYPE_CHECKING:
    import pwd  # (imported when needed: the module also imports where there is no pwd)

TIMEOUT = 60.0
"""Seconds any one step (initdb, install, start, stop, pgbouncer start) may take before it counts
as hung."""

_Error = TypeVar("_Error", bound=Exception)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def check_identifiers(server: str, **names: str) -> None:
    """Refuse (``ValueError``) a name given to ``server``'s constructor that is not a plain
    lowercase SQL identifier: the servers write them into statements unquoted."""
    for option, name in names.items():
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(
                f"{server}(): {option} must be a plain lowercase SQL identifier, "
                f"such as 'app', not {name!r}"
            )


# --- the account the servers run as ---------------------------------------------------------------


def server_account(
    user: str, variable: str, *, refusal: str, error: type[Exception]
) -> pwd.struct_passwd | None:
    """The account to run the servers as: ``None`` (ourselves) unless we are root, in which case
    the system user ``user`` (or the one ``$variable`` names), created if missing.

    ``refusal`` begins the message of the ``error`` raised when it cannot be created: why the
    server does not run as root.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    name = os.environ.get(variable) or user
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    # Another test session may create it at the same moment: look again whatever useradd says.
    try:
        created = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        why = created.stderr.strip() or f"useradd exited with {created.returncode}"
    except OSError as exc:  # no useradd on this system
        why = str(exc)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise error(
            f"{refusal}, and creating the system user {name!r} failed: "
            f"{why}; create it yourself, or name an existing one in ${variable}"
        ) from None


def give_to(account: pwd.struct_passwd | None, path: Path) -> None:
    """Make ``account`` own ``path`` and everything under it; nothing when ``account`` is None."""
    if account is None:
        return
    for folder, dirs, files in os.walk(path):
        os.chown(folder, account.pw_uid, account.pw_gid)
        for name in (*dirs, *files):
            os.chown(
                os.path.join(folder, name),
                account.pw_uid,
                account.pw_gid,
                follow_symlinks=False,
            )


class Identity(TypedDict):
    """The ``user``, ``group`` and ``extra_groups`` arguments of :class:`subprocess.Popen`."""

    user: int | None
    group: int | None
    extra_groups: list[int] | None


def identity(account: pwd.struct_passwd | None) -> Identity:
    """The identity to give a server program: ``account``'s, or ours (all None) for None."""
    if account is None:
        return {"user": None, "group": None, "extra_groups": None}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def environment(
    account: pwd.struct_passwd | None, home: Path, *, drop: tuple[str, ...]
) -> dict[str, str]:
    """Our environment without the variables whose names begin with one of ``drop``, in the C
    locale, and, for another ``account``, with its name and ``home`` as its home."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(drop)}
    env["LC_ALL"] = "C"
    if account is not None:
        env["HOME"] = str(home)
        env["USER"] = env["LOGNAME"] = account.pw_name
    return env


# --- running programs and saying why they failed --------------------------------------------------


def run(
    args: Sequence[str | Path],
    *,
    what: str,
    cwd: Path,
    env: dict[str, str],
    account: pwd.struct_passwd | None,
    log: Path,
    error: Callable[[str], Exception],
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program as ``account`` (None: ourselves), with ``stdin`` as its input (None: none),
    and return what it printed.

    ``error`` makes the exception raised when it hangs or (with ``check``) fails; its message
    names the step (``what``), quotes the program's output and ends with the tail of ``log``.
    """
    try:
        # Its own session: a server it starts outlives it, and a Ctrl-C meant for pytest must
        # not shut the server down under the fixtures' finalizers.
        result = subprocess.run(
            [str(arg) for arg in args],
            stdin=subprocess.DEVNULL if stdin is None else None,
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=TIMEOUT + 30,
            start_new_session=True,
            check=False,
            **identity(account),
        )
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what} hung for {exc.timeout}s\n{log_section(log)}") from None
    if check and result.returncode != 0:
        raise error(
            f"{what} failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr).strip()}\n{log_section(log)}"
        )
    return result


def scrubbed(kind: type[_Error], password: str, message: str) -> _Error:
    """A ``kind`` error whose message, which may quote a statement, a program's output or a log,
    shows no piece of ``password``."""
    return kind(Secrets([password]).scrub(message))


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the file ``path``, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def log_section(log: Path, lines: int = 40) -> str:
    """The end of the server's log, headed by its path, to close an error message with."""
    return f"--- end of {log} ---\n{tail(log, lines)}"


# --- the watchdog ---------------------------------------------------------------------------------


class Watchdog:
    """A process that cleans up if this one dies without closing its server.

    It reads a pipe whose only write end is ours: end-of-file means this process closed it
    (:meth:`stop`, after cleaning up) or died. If the server's directory still exists then, it
    kills the processes named by :meth:`notify`, runs the stop command given to :meth:`start`
    when its marker file exists, and deletes the directory.
    """

    def __init__(self) -> None:
        # The watchdog process, and the write end of the pipe that is its stdin.
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None

    def start(
        self,
        base: Path,
        *,
        account: pwd.struct_passwd | None = None,
        stop: tuple[Path, Sequence[str | Path]] | None = None,
    ) -> None:
        """Start watching the directory ``base``. ``stop``: a marker file, and the command to
        run (as ``account``, None: ourselves) when it exists, such as ``pg_ctl stop``."""
        read_end, self._pipe = os.pipe()
        uid, gid = (-1, -1) if account is None else (account.pw_uid, account.pw_gid)
        marker, command = ("", ()) if stop is None else stop
        try:
            # Its own session, so that a Ctrl-C which stops pytest halfway does not stop it too.
            self._process = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(base), str(uid), str(gid), str(marker),
                 *(str(arg) for arg in command)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(read_end)

    def notify(self, line: str) -> None:
        """Tell the watchdog a line: ``"pid N"`` names a process to kill."""
        if self._pipe is not None:
            os.write(self._pipe, f"{line}\n".encode())

    def stop(self) -> None:
        """Close our end of the pipe and wait for the watchdog to end (finding nothing to do when
        the directory is gone)."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe)
        process, self._process = self._process, None
        if process is not None:
            process.wait(TIMEOUT)


# The watchdog's program (see Watchdog). Arguments: the server's directory, the uid and gid to run
# the stop command as (-1: unchanged), a marker file, and the stop command to run if the marker
# exists (none: nothing to run). Lines "pid N" on stdin name the processes to kill.
_WATCHDOG = """\
import os, shutil, signal, subprocess, sys
base, uid, gid, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
command = sys.argv[5:]
pids = [int(line.split()[1]) for line in sys.stdin if line.startswith("pid ")]
if os.path.isdir(base):
    for pid in pids:
        try:  # only a process started from this server's directory, not a reused pid
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if base.encode() in cmdline.read():
                    os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if command and os.path.exists(marker):
        as_user = {} if uid < 0 else {"user": uid, "group": gid, "extra_groups": []}
        subprocess.run(command, cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60, **as_user)
    shutil.rmtree(base, ignore_errors=True)
"""
