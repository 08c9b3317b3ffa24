"""A throwaway PostgreSQL cluster for tests: ``with throwaway_postgres() as pg: ...``.

The cluster lives in a private folder under /tmp, listens on a free port of 127.0.0.1 only
(password auth, scram-sha-256) and on a Unix socket inside that folder, and is stopped and
removed when the block exits. Debian's ``postgresql`` package is installed with apt-get when no
server binaries are found and we are root. As root, initdb and pg_ctl run as the ``postgres``
system user (initdb refuses root); otherwise as the current user.

    with throwaway_postgres() as pg:
        url = pg.create_database("mlflow")           # postgresql://meterid:...@127.0.0.1:P/mlflow
        pg.url("mlflow", driver="psycopg2")          # postgresql+psycopg2://...  (MLflow)
        pg.create_database("prefect", extensions=("pg_trgm",))
        pg.url("prefect", driver="asyncpg")          # postgresql+asyncpg://...   (Prefect)

The test role owns the databases it creates and is not a superuser (CREATEDB only), like an
application role in production; ``pg_trgm`` is a trusted extension (PostgreSQL >= 13), so a
database owner can create it.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SERVER_USER = "postgres"  # the system user of Debian's package, and the bootstrap superuser
TEST_ROLE = "meterid"
MIN_MAJOR = 14  # Prefect 3 needs >= 14.9; Debian 12 ships 15
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_INSTALL_LOCK = "/tmp/meterid-postgres-install.lock"
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 60
# Durability is pointless for a cluster that is deleted afterwards: these make it faster.
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """The throwaway cluster could not be installed, started or used; the message says why."""


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway cluster, as seen by a client."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    data_dir: Path
    socket_dir: Path
    pid: int  # the postmaster's
    superuser: str = SERVER_USER

    def url(self, database: str, driver: str | None = None) -> str:
        """``postgresql[+driver]://user:password@127.0.0.1:PORT/database``."""
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"{scheme}://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"

    def connect(self, database: str = "postgres"):
        """A psycopg2 connection as the test role (autocommit), over TCP with its password."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=database, connect_timeout=10)
        conn.autocommit = True
        return conn

    def create_database(self, name: str, extensions: Sequence[str] = ()) -> str:
        """Create ``name`` owned by the test role, with ``extensions``; returns its plain URL."""
        from psycopg2 import sql

        _check_name(name)
        conn = self.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        if extensions:
            conn = self.connect(name)
            try:
                with conn.cursor() as cur:
                    for extension in extensions:
                        cur.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(
                            sql.Identifier(extension)))
            finally:
                conn.close()
        return self.url(name)


def _check_name(name: str) -> None:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"database name {name!r}: use letters, digits and _ (at most 63)")


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin with initdb, pg_ctl and postgres (N >= 14)."""
    found = []
    for bindir in Path("/").glob(_BIN_GLOB.lstrip("/")):
        major = bindir.parent.name
        if not major.isdigit() or int(major) < MIN_MAJOR:
            continue
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            found.append((int(major), bindir))
    return max(found)[1] if found else None


def ensure_installed() -> Path:
    """The server binaries' folder, installing Debian's ``postgresql`` first if need be."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0:
        raise PostgresError(
            "PostgreSQL server binaries not found (no initdb under /usr/lib/postgresql/*/bin) "
            "and not root, so they cannot be installed here: as root run `apt-get update && "
            "DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql`")
    if shutil.which("apt-get") is None:
        raise PostgresError("PostgreSQL server binaries not found and there is no apt-get")
    with open(_INSTALL_LOCK, "w") as lock:  # parallel test processes: one install at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        bindir = find_bindir()
        if bindir is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for command in (["apt-get", "update"],
                            ["apt-get", "install", "-y", "--no-install-recommends",
                             "postgresql", "postgresql-contrib"]):
                _run(command, env=env, timeout=900, what="installing PostgreSQL")
            bindir = find_bindir()
    if bindir is None:
        raise PostgresError("apt-get installed postgresql but no initdb under "
                            f"{_BIN_GLOB} (major version >= {MIN_MAJOR})")
    return bindir


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """The environment without libpq's PG* variables (PGHOST, PGPORT, PGDATA...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run(command: list[str], *, what: str, timeout: float, env: Mapping[str, str] | None = None,
         cwd: Path | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(command, env=dict(env or _clean_env()), cwd=cwd, timeout=timeout,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except subprocess.TimeoutExpired as exc:
        raise PostgresError(f"{what}: `{' '.join(command)}` ran past {timeout} s"
                            f"{_log_tail(log)}") from exc
    if done.returncode != 0:
        raise PostgresError(
            f"{what}: `{' '.join(command)}` exited {done.returncode}\n"
            f"--- output ---\n{(done.stdout + done.stderr).strip()}{_log_tail(log)}")
    return done


def _log_tail(log: Path | None, limit: int = 8000) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace")
    return f"\n--- {log} ---\n{text[-limit:].strip()}"


class _Cluster:
    """The server side: a folder, its owner, and the commands run as that owner."""

    def __init__(self, bindir: Path, settings: Mapping[str, str]) -> None:
        self.bindir = bindir
        self.settings = {**_FAST_SETTINGS, **settings}
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresError(
                    f"running as root but there is no {SERVER_USER!r} system user to run "
                    "initdb as (Debian's postgresql-common creates it)") from None
            self.prefix = ["runuser", "-u", SERVER_USER, "--"]
        else:
            owner = pwd.getpwuid(os.geteuid())
            self.prefix = []
        self.uid, self.gid = owner.pw_uid, owner.pw_gid
        # Under /tmp (sticky, world-traversable): pytest's tmp_path parents are 0700 root.
        parent = "/tmp" if os.path.isdir("/tmp") else None
        self.base = Path(tempfile.mkdtemp(prefix="meterid-pg-", dir=parent))
        os.chmod(self.base, 0o700)
        os.chown(self.base, self.uid, self.gid)
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = 0

    def run(self, tool: str, *args: str, what: str, timeout: float = 120) -> None:
        _run([*self.prefix, str(self.bindir / tool), *args], what=what, timeout=timeout,
             cwd=self.base, log=self.log)

    def write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        os.chmod(path, 0o600)
        os.chown(path, self.uid, self.gid)

    def initdb(self, superuser_password: str) -> None:
        pwfile = self.base / "pwfile"
        self.write_owned(pwfile, superuser_password + "\n")
        try:
            self.run("initdb", "-D", str(self.data), "-U", SERVER_USER, f"--pwfile={pwfile}",
                     "--auth-host=scram-sha-256",
                     "--auth-local=trust",  # the socket is in a 0700 folder: its owner and root
                     "--encoding=UTF8", "--no-locale", "--no-instructions", "--no-sync",
                     what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def configure(self, port: int) -> None:
        self.port = port
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{self.base}'",
            **{k: _conf_value(v) for k, v in self.settings.items()},
        }
        conf = "\n".join(f"{k} = {v}" for k, v in lines.items())
        # A file of our own, included last: its lines win over initdb's postgresql.conf.
        self.write_owned(self.data / "throwaway.conf", conf + "\n")
        main_conf = self.data / "postgresql.conf"
        if "include = 'throwaway.conf'" not in main_conf.read_text():
            with open(main_conf, "a") as out:
                out.write("\ninclude = 'throwaway.conf'\n")

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                 "-t", str(_START_TIMEOUT_S), "start",
                 what="starting PostgreSQL", timeout=_START_TIMEOUT_S + 30)

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Fast shutdown, then SIGQUIT/SIGKILL if the postmaster is still there; never raises."""
        pid = self.pid()
        if pid is None or not _alive(pid):
            return
        try:
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w",
                     "-t", str(_STOP_TIMEOUT_S), "stop",
                     what="stopping PostgreSQL", timeout=_STOP_TIMEOUT_S + 30)
        except PostgresError:
            pass
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if not _alive(pid):
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            _wait_gone(pid, 10)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _conf_value(value: str) -> str:
    value = str(value)
    if re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, left to a PID 1 that does not reap, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _create_role(cluster: _Cluster, role: str, password: str) -> None:
    import psycopg2

    # As the superuser over the private Unix socket (trust), never over TCP.
    conn = psycopg2.connect(host=str(cluster.base), port=cluster.port, user=SERVER_USER,
                            dbname="postgres", connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB PASSWORD %s', (password,))
    finally:
        conn.close()


@contextmanager
def throwaway_postgres(settings: Mapping[str, str] | None = None, *, role: str = TEST_ROLE,
                       start_attempts: int = 3) -> Iterator[PostgresServer]:
    """A fresh cluster on a free loopback port for the ``with`` block; stopped and removed after.

    ``settings`` are extra postgresql.conf parameters (e.g. ``{"max_connections": "200"}``).
    Raises PostgresError (with the server's log) when it cannot be installed or started.
    """
    _check_name(role)
    bindir = ensure_installed()
    cluster = _Cluster(bindir, settings or {})
    try:
        superuser_password = secrets.token_hex(16)
        cluster.initdb(superuser_password)
        for attempt in range(1, start_attempts + 1):
            cluster.configure(free_port())
            try:
                cluster.start()
                break
            except PostgresError as exc:  # another process may have taken the port meanwhile
                cluster.stop()
                if attempt == start_attempts or "already in use" not in str(exc):
                    raise
        pid = cluster.pid()
        if pid is None:
            raise PostgresError(f"PostgreSQL started but wrote no postmaster.pid"
                                f"{_log_tail(cluster.log)}")
        password = secrets.token_hex(16)
        _create_role(cluster, role, password)
        server = PostgresServer(host="127.0.0.1", port=cluster.port, user=role,
                                password=password, data_dir=cluster.data,
                                socket_dir=cluster.base, pid=pid)
    except BaseException:
        cluster.stop()
        cluster.remove()
        raise
    try:
        yield server
    finally:
        cluster.stop()
        cluster.remove()
