"""A throwaway PostgreSQL for tests and benches: one cluster per session, one database per test.

    @pytest.mark.postgres
    async def test_something(pg_url: str) -> None:      # a fresh, empty database
        async with await psycopg.AsyncConnection.connect(pg_url) as conn: ...

    def test_other(pg_cluster: PgCluster) -> None:       # the session's cluster
        with pg_cluster.database("extra") as url: ...    # one more database, dropped after

The cluster comes from Debian's ``postgresql`` package (the binaries of ``pg_config
--bindir``, else the newest ``/usr/lib/postgresql/*/bin``), as the CI installs the
Alertmanager: ``initdb -A trust --no-sync -E UTF8`` into a temporary folder, then
``pg_ctl start -w`` on 127.0.0.1 with a free port and the socket in that folder, and
``pg_ctl stop -m immediate`` when the session ends. ``initdb`` refuses to run as root,
so a root test run starts it as the ``postgres`` user through ``runuser``; the folder
is then made by root in ``/tmp`` and handed to that user (pytest's own temporary
folders are 0700 under root's name, where ``postgres`` cannot enter).

``fsync`` stays on (``--no-sync`` only spares initdb's own flushes): the durability
tests need commits that mean what they mean in production. The locale is ``C``, so
that no test depends on which locales the machine has; code must not rely on it
(production clusters mostly collate by ``en_US.UTF-8``).

Without the binaries (or psycopg) a test that needs them is skipped with the install
line, except when ``PODIUM_REQUIRE_PG=1`` (``.ci/run`` sets it): then it fails. A
cluster that cannot start is always a failure, never a skip. Tests using these
fixtures get the ``postgres`` marker, so ``-m "not postgres"`` leaves them out.

If the test process dies without running its finalizers (``kill -9``), a watchdog
process stops the cluster and removes its folder within a second or two, so no
postmaster is left running on a shared machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = [
    "INSTALL",
    "REQUIRE_ENV",
    "PgCluster",
    "PgUnavailable",
    "find_bindir",
    "pg_cluster",
    "pg_url",
    "unavailable",
]

INSTALL = "apt-get install -y postgresql"
REQUIRE_ENV = "PODIUM_REQUIRE_PG"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60
_PORT_TRIES = 5


class PgUnavailable(RuntimeError):
    """PostgreSQL's server binaries (or psycopg) are not installed here."""


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); unparsable names sort first.
    return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (-1,)


def find_bindir() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    ``pg_config`` may come from a newer libpq package than the server (Debian's
    libpq-dev), so its answer is only taken when the server binaries are there.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            if out:
                candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key,
                         reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def unavailable(why: str) -> NoReturn:
    """Skip the test for ``why``, or fail it when ``PODIUM_REQUIRE_PG=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{why}; {REQUIRE_ENV}=1 requires PostgreSQL")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# Runs beside the test process; stops the cluster if that process vanishes without
# stopping it. Arguments: parent pid, then the command that stops the cluster, then
# the folder to remove. Exits quietly when the folder is gone (a normal stop).
_WATCHDOG = """
import os, shutil, subprocess, sys, time
parent, folder, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
while os.path.isdir(folder):
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)
        break
    time.sleep(1)
"""


class PgCluster:
    """One running PostgreSQL cluster in a folder of its own, reached on 127.0.0.1."""

    def __init__(self, bindir: Path, folder: Path, port: int,
                 watchdog: subprocess.Popen[bytes] | None) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "server.log"
        self.port = port
        self.host = "127.0.0.1"
        self.user = SUPERUSER
        self._watchdog = watchdog
        self._names = itertools.count(1)
        self.stopped = False
        self.startup_s = 0.0  # initdb + start, for reports

    # --- starting and stopping --------------------------------------------------

    @classmethod
    def start(cls, bindir: Path | None = None, parent: str | Path | None = None) -> PgCluster:
        """initdb + start a new cluster under ``parent`` (the system temp folder by default).

        Raises PgUnavailable when the binaries are missing, RuntimeError (with the
        server's log) when they are there but the cluster does not come up.
        """
        bindir = bindir or find_bindir()
        if bindir is None:
            raise PgUnavailable("PostgreSQL server binaries not found (pg_config --bindir,"
                                f" /usr/lib/postgresql/*/bin) (fix: {INSTALL})")
        t0 = time.monotonic()
        folder = Path(tempfile.mkdtemp(prefix="podium-pg-", dir=parent))
        try:
            if _as_root():
                _hand_to_postgres(folder)
            cls._initdb(bindir, folder)
            cluster = cls(bindir, folder, 0, None)
            cluster._start_on_free_port()
            cluster._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(folder),
                 *cluster._stop_command()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        cluster.startup_s = time.monotonic() - t0
        return cluster

    @staticmethod
    def _initdb(bindir: Path, folder: Path) -> None:
        cmd = _owner_cmd([str(bindir / "initdb"), "-D", str(folder / "data"), "-A", "trust",
                          "--no-sync", "-E", "UTF8", "--locale=C", "-U", SUPERUSER])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                              cwd=folder)
        if done.returncode:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr or done.stdout}")
        # The socket lives beside the data (no /var/run/postgresql needed, no clash with
        # a system cluster); TCP only on loopback. fsync is on by default: say it anyway.
        with (folder / "data" / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\n# podium test cluster\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{folder}'\nfsync = on\n"
                       "max_connections = 200\n")

    def _start_on_free_port(self) -> None:
        # A port found free can be taken by someone else before the server binds it:
        # try again with another one rather than fail the session.
        for _ in range(_PORT_TRIES):
            self.port = _free_port()
            cmd = _owner_cmd([str(self.bindir / "pg_ctl"), "start", "-w", "-t",
                              str(START_TIMEOUT_S), "-D", str(self.data), "-l", str(self.log),
                              "-o", f"-p {self.port}"])
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=START_TIMEOUT_S + 30, check=False, cwd=self.folder)
            if done.returncode == 0:
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "could not bind" not in log and "already in use" not in log:
                raise RuntimeError(f"pg_ctl start failed ({done.returncode}):"
                                   f" {done.stderr or done.stdout}\n{log[-4000:]}")
            self.log.unlink(missing_ok=True)
        raise RuntimeError(f"no free port for PostgreSQL after {_PORT_TRIES} tries")

    def crash_and_restart(self, down_s: float = 2.0) -> None:
        """Stop the server as a crash would (``-m immediate``: no shutdown checkpoint,
        clients cut), stay down ``down_s``, start it again on the same port (it replays
        its log: what was committed is there)."""
        self.down()
        time.sleep(down_s)
        self.up()

    def down(self) -> None:
        """Stop the server as a crash would, keeping its data (``up`` starts it again)."""
        subprocess.run(self._stop_command(), capture_output=True, timeout=60, check=True,
                       cwd=self.folder)

    def up(self) -> None:
        """Start the server again on the same port, after ``down``."""
        cmd = _owner_cmd([str(self.bindir / "pg_ctl"), "start", "-w", "-t",
                          str(START_TIMEOUT_S), "-D", str(self.data), "-l", str(self.log),
                          "-o", f"-p {self.port}"])
        subprocess.run(cmd, capture_output=True, timeout=START_TIMEOUT_S + 30, check=True,
                       cwd=self.folder)

    def _stop_command(self) -> list[str]:
        return _owner_cmd([str(self.bindir / "pg_ctl"), "stop", "-m", "immediate", "-w",
                           "-D", str(self.data)])

    def stop(self) -> None:
        """Stop at once (``-m immediate``: nothing to keep) and remove the folder."""
        if self.stopped:
            return
        self.stopped = True
        try:
            subprocess.run(self._stop_command(), capture_output=True, timeout=60, check=False,
                           cwd=self.folder)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self._watchdog is not None:
                # The folder is gone, so it exits at its next look; do not wait that second.
                self._watchdog.send_signal(signal.SIGTERM)
                self._watchdog.wait(timeout=10)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- databases --------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, hint: str = "") -> str:
        """A new empty database (from template1, the usual default); returns its name."""
        import psycopg
        from psycopg import sql

        slug = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")
        name = f"t{next(self._names)}_{slug}"[:63].rstrip("_")
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending connections a test left open (PostgreSQL 13+)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))

    @contextlib.contextmanager
    def database(self, hint: str = "") -> Iterator[str]:
        """A fresh database's URL for the ``with`` block; dropped after."""
        name = self.create_database(hint)
        try:
            yield self.url(name)
        finally:
            if not self.stopped:
                self.drop_database(name)

    def server_version(self) -> str:
        out = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
        return out.strip()


def _owner_cmd(cmd: list[str]) -> list[str]:
    """``cmd`` as the user who owns the cluster: ``postgres`` when we are root."""
    if not _as_root():
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", SUPERUSER, "--", *cmd]


def _hand_to_postgres(folder: Path) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PgUnavailable(f"running as root needs the '{SUPERUSER}' user, which Debian's"
                            f" postgresql package creates (fix: {INSTALL})") from None
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    # Its parents must let that user through (mkdtemp's own folder is 0700, now its own).
    for parent in folder.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise RuntimeError(f"{parent} is not searchable by the '{SUPERUSER}' user;"
                               " put the cluster elsewhere (fix: a parent folder with o+x)")


# --- pytest -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL cluster (started on first use, stopped at the end)."""
    try:
        import psycopg  # noqa: F401 - only to say what is missing before starting anything
    except ImportError:
        unavailable("psycopg is not installed (fix: pip install -e '.[postgres]')")
    try:
        cluster = PgCluster.start()
    except PgUnavailable as exc:
        unavailable(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/NAME`` of a fresh database, dropped after the test."""
    with pg_cluster.database(request.node.name) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever asks for the cluster is a postgres test, marked or not.
    for item in items:
        if "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
