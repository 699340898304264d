"""`webevolver server|deploy|worker`: the local Prefect server, deployments and a worker.

Why: a round is a Prefect flow; running it on a schedule, from the UI or on another
machine takes a server, deployments (``prefect.yaml`` at the project root) and a worker
polling a work pool. These commands wrap Prefect's own CLI against one shared local
server (`infra.prefect_server.ensure_server`, started detached on first use so the UI
outlives each command); every ``prefect`` call gets that server's ``PREFECT_API_URL``.

Register them in ``cli/main.py``::

    from cli.prefect_cmds import deploy, server_app, worker
    app.add_typer(server_app, name="server")
    app.command()(deploy)
    app.command()(worker)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from cli.output import console, emit_json
from evolver_core.contracts.errors import WebEvolverError
from infra.postgres import PostgresError
from infra.prefect_server import (
    HEARTBEAT_S,
    PREFECT,
    PrefectServerError,
    RunningServer,
    client_env,
    ensure_server,
    server_lost_message,
    server_status,
    stop_server,
    watch_server,
)

WORK_POOL = "webevolver-process"
PROJECT_DIR = Path(__file__).resolve().parents[1]  # where prefect.yaml lives

server_app = typer.Typer(help="The local Prefect server (API + UI) that WebEvolver flows report to.",
                         no_args_is_help=True)

DatabaseOpt = typer.Option("sqlite", help="Database of a server that has to be started: sqlite (kept in "
                           "$WEBEVOLVER_HOME/prefect), postgres (an ephemeral PostgreSQL for many concurrent "
                           "writers; its history ends with the server) or a SQLAlchemy URL.")
JsonOpt = typer.Option(False, "--json", help="End with a JSON summary line.")


class PrefectCommandError(WebEvolverError, RuntimeError):
    """A ``prefect`` CLI call failed."""


def run_prefect(*args: str, env: dict[str, str], cwd: Path | None = None, check: bool = True,
                quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``prefect <args>`` against the server in `env` (Prefect client variables)."""
    done = subprocess.run([*PREFECT, *args], env=os.environ | env, cwd=cwd, text=True,
                          capture_output=quiet, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        detail = f"\n{done.stdout}{done.stderr}" if quiet else ""
        raise PrefectCommandError(f"`prefect {' '.join(args)}` failed with code {done.returncode}{detail}")
    return done


def ensure_work_pool(env: dict[str, str], pool: str = WORK_POOL) -> bool:
    """Create the process work pool `pool` unless it exists; True if it was created."""
    if run_prefect("work-pool", "inspect", pool, env=env, check=False, quiet=True).returncode == 0:
        return False
    run_prefect("work-pool", "create", pool, "--type", "process", env=env, quiet=True)
    return True


def deploy_project(env: dict[str, str], project_dir: Path = PROJECT_DIR, names: list[str] | None = None) -> None:
    """``prefect --no-prompt deploy`` every deployment of ``<project_dir>/prefect.yaml`` (or the `names`)."""
    if not (project_dir / "prefect.yaml").exists():
        raise FileNotFoundError(f"no prefect.yaml in {project_dir}")
    selection = [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    run_prefect("--no-prompt", "deploy", *selection, env=env, cwd=project_dir)


def worker_command(pool: str = WORK_POOL, limit: int | None = None) -> list[str]:
    """``prefect worker start`` for a process work pool (`limit`: concurrent flow runs)."""
    return [*PREFECT, "worker", "start", "--pool", pool, "--type", "process",
            *(["--limit", str(limit)] if limit else [])]


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Failures of servers and ``prefect`` calls end the command with their message, not a traceback."""
    try:
        yield
    except (PrefectServerError, PostgresError, PrefectCommandError, FileNotFoundError) as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from None


def _describe(server: RunningServer) -> str:
    return f"Prefect server {server.api_url} ({server.database}, pid {server.pid}); UI: {server.ui_url}"


def _summary(server: RunningServer | None) -> dict[str, object]:
    if server is None:
        return {"running": False}
    return {"running": True, "api_url": server.api_url, "ui_url": server.ui_url, "pid": server.pid,
            "server_pid": server.server_pid, "database": server.database, "log": server.log_path}


@server_app.command("start")
def server_start(database: str = DatabaseOpt, as_json: bool = JsonOpt) -> None:
    """Start the shared local Prefect server (or reuse the running one) and print its UI URL."""
    with _reported_errors():
        server = ensure_server(database=database)
    console.print(_describe(server))
    if as_json:
        emit_json(_summary(server))


@server_app.command("stop")
def server_stop(as_json: bool = JsonOpt) -> None:
    """Stop the shared local Prefect server (and its PostgreSQL, if any)."""
    stopped = stop_server()
    console.print(f"stopped {_describe(stopped)}" if stopped else "no Prefect server was running")
    if as_json:
        emit_json({"stopped": stopped is not None})


@server_app.command("status")
def server_status_cmd(as_json: bool = JsonOpt) -> None:
    """Whether the shared local Prefect server runs, and its UI URL."""
    server = server_status()
    console.print(_describe(server) if server else "no Prefect server is running; start one with "
                  "`webevolver server start`")
    if as_json:
        emit_json(_summary(server))


def deploy(
    name: Optional[list[str]] = typer.Option(None, "--name", "-n", help="Deployment(s) to apply "
                                             "(evolve-round, evolve, evaluate); default: all."),
    project_dir: Path = typer.Option(PROJECT_DIR, help="Folder holding prefect.yaml."),
    database: str = DatabaseOpt,
) -> None:
    """Apply the deployments of prefect.yaml to the local Prefect server (creating their work pool)."""
    with _reported_errors():
        server = ensure_server(database=database)
        if ensure_work_pool(server.env, WORK_POOL):
            console.print(f"created work pool {WORK_POOL!r}")
        deploy_project(server.env, project_dir, name)
    console.print(f"deployed; start a worker with `webevolver worker`, runs show up at {server.ui_url}")


def worker(pool: str = typer.Option(WORK_POOL, help="Work pool to poll (type process; created if missing)."),
           limit: Optional[int] = typer.Option(None, help="Most flow runs at once (default: no limit)."),
           database: str = DatabaseOpt) -> None:
    """Run a Prefect worker that executes deployed flow runs as local processes (until Ctrl-C)."""
    with _reported_errors():
        server = ensure_server(database=database)
        ensure_work_pool(server.env, pool)
    console.print(f"worker on pool {pool!r} of {_describe(server)}")
    with subprocess.Popen(worker_command(pool, limit), env=os.environ | server.env) as process:
        try:
            code = process.wait()
        except KeyboardInterrupt:  # the worker got the Ctrl-C too: let it shut down cleanly
            code = process.wait()
    raise typer.Exit(code)


def use_prefect_server() -> RunningServer:
    """The Prefect server flows report to: $PREFECT_API_URL if set, else a local one (started
    once, kept). While the command runs, losing that server ends it within seconds with one
    line (`watch_server`); its flow runs send heartbeats, and the server marks the runs whose
    heartbeats stop `Crashed` (`ensure_crash_automation`)."""
    if api := os.environ.get("PREFECT_API_URL"):
        ui = os.environ.get("PREFECT_UI_URL", api.removesuffix("/api"))
        server = RunningServer(api_url=api, ui_url=ui, pid=0, server_pid=0, database="?", log_path="")
    else:
        server = ensure_server()
    os.environ.update(client_env(server.api_url, server.ui_url))  # before prefect is imported
    from cli.errors import in_command, log_to_file

    import prefect  # noqa: F401 - configures its logging, which `log_to_file` then adjusts

    log_to_file()
    ensure_crash_automation()
    if in_command():  # the process is the command's: watch until it ends (not a test calling the function)
        watch_server(server.api_url, lambda: _server_lost(server))
    return server


def _server_lost(server: RunningServer) -> None:
    """End the command at once: every call the flow still makes would fail after a retry delay."""
    from cli.errors import EXIT_SERVER_LOST, log_file

    message = server_lost_message(server.ui_url)
    print(f"webevolver: {message}", file=sys.stderr)
    with contextlib.suppress(OSError), log_file().open("a") as f:
        f.write(message + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_SERVER_LOST)  # the run lock and child services are left to their dead-owner handling


CRASH_AUTOMATION = "webevolver: crash flow runs without heartbeats"


def ensure_crash_automation() -> None:
    """Create, once per server, Prefect's documented zombie-run automation: a flow run whose
    heartbeat (every `HEARTBEAT_S`) has not come for 3 beats, and that did not finish, is
    marked `Crashed`. Runs killed with -9, or whose machine died, then stop showing `Running`."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    with contextlib.suppress(ValueError):  # Automation.read raises ValueError when there is none
        if Automation.read(name=CRASH_AUTOMATION):
            return
    Automation(
        name=CRASH_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in
                                                    ("Completed", "Failed", "Cancelled", "Crashed"))},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=3 * HEARTBEAT_S)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {3 * HEARTBEAT_S} s: its process is gone")],
    ).create()
