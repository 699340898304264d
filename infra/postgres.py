"""A throw-away PostgreSQL server for the Prefect server's database.

Why: Prefect's default SQLite database serialises every write; the issue reported ~160 ms
of orchestration overhead per submitted task on SQLite against ~30 ms on PostgreSQL, and a
round submits thousands of tasks from many processes. So the Prefect server can run on
PostgreSQL instead (`infra.prefect_server.PrefectServer(database="postgres")`). (On a 2-core
machine the two measured alike, RESULTS.md R3: there the server's CPU is the limit.)

`PostgresServer` uses Debian's ``postgresql`` binaries: ``initdb`` into a fresh temporary
directory (trust authentication, one superuser), ``pg_ctl start`` listening on a free port
on 127.0.0.1 only (no Unix socket), ``createdb``; on exit ``pg_ctl stop -m fast`` and the
directory is removed. The database is ephemeral by design; for runs history that outlives
the server, point the Prefect server at your own PostgreSQL with a connection URL.

PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` system user
(Debian's package creates it), which owns the temporary directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from evolver_core.contracts.errors import WebEvolverError
from infra.process import free_port

DEBIAN_BIN_DIRS = Path("/usr/lib/postgresql")  # <version>/bin, off PATH on Debian
SERVER_USER = "postgres"
START_TIMEOUT_S = 60
INSTALL_HINT = "install Debian's package: `apt-get install -y postgresql`"


class PostgresError(WebEvolverError, RuntimeError):
    """PostgreSQL is missing, or failed to initialise, start or create the database."""


def postgres_bin(name: str) -> Path:
    """Path of a PostgreSQL program: on PATH, else the newest /usr/lib/postgresql/<v>/bin."""
    if found := shutil.which(name):
        return Path(found)
    versions = sorted((p for p in DEBIAN_BIN_DIRS.glob(f"*/bin/{name}") if p.parents[1].name.isdigit()),
                      key=lambda p: int(p.parents[1].name))
    if versions:
        return versions[-1]
    raise PostgresError(f"PostgreSQL program {name!r} not found; {INSTALL_HINT}")


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None for the current one, `postgres` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresError(f"running as root, but there is no {SERVER_USER!r} user to run "
                            f"PostgreSQL as; {INSTALL_HINT}") from None


class PostgresServer:
    """An ephemeral PostgreSQL on 127.0.0.1 with one database, as a context manager::

        with PostgresServer() as pg:
            url = pg.sqlalchemy_url  # postgresql+asyncpg://prefect@127.0.0.1:<port>/prefect
    """

    def __init__(self, *, database: str = "prefect", user: str = "prefect", host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.database = database
        self.user = user
        self.host = host
        self.port = port
        self.data_dir: Path | None = None
        self._account = _server_user()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, data_dir={self.data_dir})"

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL Prefect takes (``PREFECT_SERVER_DATABASE_CONNECTION_URL``)."""
        if self.data_dir is None:
            raise PostgresError("PostgreSQL is not running")
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        if self.data_dir is None:
            raise PostgresError("PostgreSQL is not running")
        return self.data_dir / "server.log"

    @property
    def postmaster_pid(self) -> int | None:
        """The server's pid, from ``postmaster.pid``; None when it is not running."""
        if self.data_dir is None or not (pid_file := self.data_dir / "pgdata" / "postmaster.pid").exists():
            return None
        return int(pid_file.read_text().split()[0])

    def start(self) -> PostgresServer:
        if self.data_dir is not None:
            raise PostgresError("PostgreSQL is already running")
        programs = {name: postgres_bin(name) for name in ("initdb", "pg_ctl", "createdb")}
        self.port = self.port or free_port(self.host)
        self.data_dir = Path(tempfile.mkdtemp(prefix="webevolver-pg-"))
        if self._account is not None:
            os.chown(self.data_dir, self._account.pw_uid, self._account.pw_gid)
        pgdata = self.data_dir / "pgdata"
        try:
            self._run(programs["initdb"], "-D", pgdata, "-U", self.user, "--auth=trust", "-E", "UTF8",
                      "--no-sync", as_server=True)
            options = (f"-c listen_addresses={self.host} -c port={self.port} -c unix_socket_directories='' "
                       "-c fsync=off -c synchronous_commit=off -c max_connections=200")
            self._run(programs["pg_ctl"], "start", "-w", "-t", str(START_TIMEOUT_S), "-D", pgdata,
                      "-l", self.log_path, "-o", options, as_server=True)
            self._run(programs["createdb"], "-h", self.host, "-p", str(self.port), "-U", self.user, self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` and remove the data directory; idempotent."""
        if self.data_dir is None:
            return
        try:
            if self.postmaster_pid is not None:
                self._run(postgres_bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", self.data_dir / "pgdata",
                          as_server=True)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def _run(self, program: Path, *args: str | Path, as_server: bool = False) -> None:
        command = [str(program), *map(str, args)]
        account = self._account if as_server else None
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.data_dir,
                              user=account.pw_uid if account else None,
                              group=account.pw_gid if account else None,
                              extra_groups=[] if account else None)
        if done.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise PostgresError(f"`{' '.join(command)}` failed with code {done.returncode}:\n"
                                f"{done.stdout}{done.stderr}{log}")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
