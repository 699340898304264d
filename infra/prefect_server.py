"""The local Prefect 3 server (API + UI) that WebEvolver's flows report to.

Why: every WebEvolver stage is a Prefect task, and Prefect's ephemeral mode (a throw-away
server started inside the first flow) timed out on a fresh home here and keeps no UI
after the run. So we run a real ``prefect server start`` on 127.0.0.1:

- `PrefectServer(home)`: a context manager that owns one server subprocess (its own process
  group, its own ``PREFECT_HOME``, analytics off, UI on), waits for ``GET /api/health``,
  hands out `api_url`, `ui_url` and `env` (the variables a child process needs to report to
  it) and stops the whole process group on exit. Tests use it directly
  (``tests/fixtures_prefect.py``).
- `ensure_server()` / `server_status()` / `stop_server()`: one long-running server per
  WebEvolver home (``$WEBEVOLVER_HOME/prefect``), shared by ``webevolver`` commands so the UI
  stays up between them. It is started detached: ``python -m infra.prefect_server`` runs a
  `PrefectServer` until SIGTERM and records itself in ``server.json`` (url + pids) once
  healthy.

Database: SQLite in the home by default. ``database="postgres"`` starts an ephemeral
PostgreSQL (`infra.postgres`) for many concurrent writers; any SQLAlchemy URL
(``postgresql+asyncpg://...``) uses that database instead. Start-up is dominated by
importing the server and migrating a fresh database: tens of seconds on 2 cores (RESULTS.md R3).

The server inherits the caller's environment except ``PREFECT_*`` client and profile
settings (``PREFECT_SERVER_*`` tuning passes through), so a user's own Prefect profile can
neither redirect nor be touched by it.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from evolver_core.contracts.errors import WebEvolverError
from evolver_core.pids import pid_alive
from evolver_core.settings import webevolver_home
from infra.postgres import PostgresServer
from infra.process import await_health, free_port, get_json, signal_group, stop_group

PREFECT = [sys.executable, "-m", "prefect"]
DEFAULT_STARTUP_TIMEOUT_S = 180.0
STATE_FILE = "server.json"
SUPERVISOR_MARK = b"infra.prefect_server"
SERVER_MARK = b"prefect\x00server\x00start"
LOG_TAIL_LINES = 40
HEARTBEAT_S = 30  # a flow run's heartbeat (Prefect's minimum)
LOST_AFTER_S = 5.0  # a server that has not answered its health check for this long is gone


class PrefectServerError(WebEvolverError, RuntimeError):
    """The Prefect server failed to start, died, or its state could not be read."""


def prefect_home() -> Path:
    """Where the shared server keeps its database, logs and state: ``$WEBEVOLVER_HOME/prefect``."""
    return webevolver_home() / "prefect"


def client_env(api_url: str, ui_url: str) -> dict[str, str]:
    """Environment that points a Prefect client (flow, worker, ``prefect`` CLI) at a server; its
    flow runs send heartbeats (what marks a run whose process died `Crashed`: DESIGN.md)."""
    return {"PREFECT_API_URL": api_url, "PREFECT_UI_URL": ui_url,
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "(no log)"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return f"last {len(tail)} lines of {path}:\n" + "\n".join(tail)


def is_healthy(api_url: str) -> bool:
    try:
        return get_json(f"{api_url}/health") is True
    except (httpx.HTTPError, ValueError):
        return False


def server_lost_message(ui_url: str) -> str:
    return (f"the Prefect server at {ui_url} stopped; rerun the same command to resume from the last "
            "finished stage")


def watch_server(api_url: str, on_lost: Callable[[], None], *, lost_after_s: float = LOST_AFTER_S,
                 interval_s: float = 1.0) -> threading.Event:
    """Call `on_lost()` once (from a daemon thread) when the server at `api_url` has failed its
    health check for `lost_after_s`; set the returned event to stop watching. Why: without
    it a flow goes on for minutes after its server died, printing a ConnectError a call."""
    stop = threading.Event()

    def watch() -> None:
        last_ok = time.monotonic()
        while not stop.wait(interval_s):
            if is_healthy(api_url):
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > lost_after_s:
                on_lost()
                return

    threading.Thread(target=watch, name="prefect-server-watch", daemon=True).start()
    return stop


class PrefectServer:
    """``prefect server start`` on `host` (a free port unless given), as a context manager::

        with PrefectServer(tmp_path / "prefect") as server:
            subprocess.run(["python", "my_flow.py"], env=os.environ | server.env)
            print("UI:", server.ui_url)

    `database`: ``"sqlite"`` (``<home>/prefect.db``), ``"postgres"`` (an ephemeral
    `PostgresServer`, stopped with this server) or a SQLAlchemy URL.
    """

    def __init__(self, home: Path | str, *, database: str = "sqlite", host: str = "127.0.0.1",
                 port: int | None = None, startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> None:
        self.home = Path(home)
        self.database = database
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.postgres: PostgresServer | None = None
        self.log_path: Path | None = None
        self.startup_s: float | None = None

    def __repr__(self) -> str:
        where = self.ui_url if self.process is not None else "not running"
        return f"PrefectServer({where}, database={self.database!r})"

    @property
    def ui_url(self) -> str:
        if self.port is None:
            raise PrefectServerError("the Prefect server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def env(self) -> dict[str, str]:
        """``PREFECT_API_URL`` and ``PREFECT_UI_URL`` for child processes (flows, workers, CLI)."""
        return client_env(self.api_url, self.ui_url)

    @property
    def pid(self) -> int | None:
        """The server's pid, which is also its process group id."""
        return self.process.pid if self.process is not None else None

    def start(self) -> PrefectServer:
        if self.process is not None:
            raise PrefectServerError("the Prefect server is already running")
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        self.log_path = self.home / "logs" / f"server-{self.port}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            env = self._server_env(self._database_url())
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [*PREFECT, "server", "start", "--host", self.host, "--port", str(self.port)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True)
        except BaseException:
            self.stop()  # e.g. PostgreSQL started but the server could not be
            raise
        atexit.register(self.stop)
        await_health(f"{self.api_url}/health", self.startup_timeout_s, check_alive=self._raise_if_dead,
                     stop=self.stop, on_timeout=lambda why: PrefectServerError(
                         f"the Prefect server did not become healthy: {why}\n{log_tail(self.log_path)}"))
        self.startup_s = time.monotonic() - started
        return self

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self.process is None:
            raise PrefectServerError("the Prefect server is not running")
        return self.process.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after `timeout_s`, then stop PostgreSQL; idempotent."""
        process, self.process = self.process, None
        if process is not None:
            atexit.unregister(self.stop)
            stop_group(process, timeout_s)
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def _database_url(self) -> str:
        if self.database == "sqlite":
            return f"sqlite+aiosqlite:///{self.home.resolve() / 'prefect.db'}"
        if self.database == "postgres":
            self.postgres = PostgresServer().start()
            return self.postgres.sqlalchemy_url
        if "://" in self.database:
            return self.database
        raise ValueError(f"database must be 'sqlite', 'postgres' or a SQLAlchemy URL, not {self.database!r}")

    def _server_env(self, database_url: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith("PREFECT_") or k.startswith("PREFECT_SERVER_")}
        return inherited | self.env | {
            "PREFECT_HOME": str(self.home.resolve()),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "true",
            "PREFECT_SERVER_UI_API_URL": self.api_url,
            "PYTHONUNBUFFERED": "1",
        }

    def _raise_if_dead(self) -> None:
        if self.process is not None and (code := self.process.poll()) is not None:
            raise PrefectServerError(f"the Prefect server exited with code {code} during start\n"
                                     f"{log_tail(self.log_path)}")

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass(frozen=True)
class RunningServer:
    """A detached server recorded in ``<home>/server.json``: `pid` is the supervising
    ``python -m infra.prefect_server`` process, `server_pid` the Prefect server under it."""

    api_url: str
    ui_url: str
    pid: int
    server_pid: int
    database: str
    log_path: str

    @property
    def env(self) -> dict[str, str]:
        return client_env(self.api_url, self.ui_url)


def _runs(pid: int, marker: bytes) -> bool:
    """`pid` is alive and its command line contains `marker` (a recycled pid is not ours)."""
    if not pid_alive(pid):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the state file


def _database_label(database: str) -> str:
    return database if database in ("sqlite", "postgres") else "external"  # never store a URL's password


def _read_state(home: Path) -> RunningServer | None:
    path = home / STATE_FILE
    try:
        return RunningServer(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise PrefectServerError(f"unreadable server state {path} ({exc}); delete it and retry") from None


def _write_state(home: Path, state: RunningServer) -> None:
    path = home / STATE_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(state), indent=2))
    partial.replace(path)


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One `ensure_server` at a time per home, so concurrent commands share one server."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / "server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def server_status(home: Path | None = None) -> RunningServer | None:
    """The recorded server if its supervisor runs and the API answers, else None."""
    state = _read_state(home or prefect_home())
    if state is None or not _runs(state.pid, SUPERVISOR_MARK) or not is_healthy(state.api_url):
        return None
    return state


def ensure_server(home: Path | None = None, *, database: str = "sqlite",
                  startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> RunningServer:
    """The running server of `home` (default `prefect_home()`), else a new detached one.

    `database` applies only when a server is started; a running one is reused as it is.
    """
    home = home or prefect_home()
    with _locked(home):
        if (running := server_status(home)) is not None:
            return running
        log_path = home / "logs" / "supervisor.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "infra.prefect_server", "--home", str(home.resolve()), "--database", database,
                 "--startup-timeout", str(startup_timeout_s)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=home)
        deadline = time.monotonic() + startup_timeout_s + 30  # the supervisor's own deadline comes first
        while (state := _read_state(home)) is None or state.pid != supervisor.pid:
            if (code := supervisor.poll()) is not None:
                raise PrefectServerError(f"the Prefect server supervisor exited with code {code}\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                signal_group(supervisor.pid, signal.SIGTERM)
                raise PrefectServerError(f"the Prefect server did not start in time\n{log_tail(log_path)}")
            time.sleep(0.2)
        return state


def stop_server(home: Path | None = None, timeout_s: float = 30.0) -> RunningServer | None:
    """Stop the recorded server: SIGTERM to its supervisor (which stops the server and any
    PostgreSQL), or to an orphaned server; SIGKILL to whatever is left after `timeout_s`.

    Returns what was stopped; None when no server was recorded or it was already gone.
    """
    home = home or prefect_home()
    state = _read_state(home)
    if state is None:
        return None
    live = [pid for pid, mark in ((state.pid, SUPERVISOR_MARK), (state.server_pid, SERVER_MARK)) if _runs(pid, mark)]
    if live:
        signal_group(live[0], signal.SIGTERM)  # each of them leads its own process group
        deadline = time.monotonic() + timeout_s
        while any(pid_alive(pid) for pid in live) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in live:
            signal_group(pid, signal.SIGKILL)
    (home / STATE_FILE).unlink(missing_ok=True)
    return state if live else None


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """The detached supervisor: run a `PrefectServer` for `--home` until SIGTERM or until it dies."""
    parser = argparse.ArgumentParser(prog="python -m infra.prefect_server", description=main.__doc__)
    parser.add_argument("--home", type=Path, default=prefect_home())
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--startup-timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT_S)
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    with PrefectServer(args.home, database=args.database, startup_timeout_s=args.startup_timeout) as server:
        assert server.pid is not None and server.log_path is not None
        state = RunningServer(api_url=server.api_url, ui_url=server.ui_url, pid=os.getpid(), server_pid=server.pid,
                              database=_database_label(args.database), log_path=str(server.log_path))
        _write_state(args.home, state)
        print(f"Prefect server {server.ui_url} (pid {server.pid}) ready after {server.startup_s:.1f} s", flush=True)
        try:
            return server.wait()
        finally:
            if _read_state(args.home) == state:
                (args.home / STATE_FILE).unlink()


if __name__ == "__main__":
    sys.exit(main())
