"""The real Prefect server: flows, tasks and artifacts through its API, the UI in chromium,
prefect.yaml deployments run by a process worker, and the detached shared server.

One server serves the whole session (`fixtures_prefect.prefect_server`); the detached-server
test starts one more of its own, on PostgreSQL where it is installed.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml
from playwright.async_api import async_playwright
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings

from cli.prefect_cmds import PROJECT_DIR, WORK_POOL, deploy_project, ensure_work_pool, worker_command
from evolver_core.browser.launch import CHROMIUM_ARGS, chromium_path
from infra import postgres
from infra.postgres import PostgresError, postgres_bin
from infra.prefect_server import (
    PrefectServer,
    PrefectServerError,
    ensure_server,
    is_healthy,
    log_tail,
    pid_alive,
    server_status,
    stop_server,
)
from infra.process import stop_group

PROJECT_FILE = PROJECT_DIR / "prefect.yaml"
DEPLOYMENTS = {d["name"]: d for d in yaml.safe_load(PROJECT_FILE.read_text())["deployments"]}
TEST_POOL = "webevolver-test-process"
TINY_FLOW = '''
from prefect import flow, task

@task
def seven() -> int:
    return 7

@flow
def tiny() -> int:
    return seven()

print(tiny(return_state=True).state_details.flow_run_id)
'''
SMOKE_FLOW = '''
from pathlib import Path
from uuid import UUID
from prefect import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow
def smoke(x: int = 1) -> int:
    y = double(x) + 1
    Path("ran.txt").write_text(str(y))  # relative: proves the pull step set the working directory
    return y
'''


def _postgres_available() -> bool:
    try:
        postgres_bin("pg_ctl")
    except PostgresError:
        return False
    return True


def _our_postgres_pids() -> set[int]:
    """Postmasters started by `infra.postgres` (their data directory is a webevolver-pg-* temp dir)."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"webevolver-pg-" in cmdline.read_bytes():
                pids.add(int(cmdline.parent.name))
        except OSError:
            pass  # exited meanwhile
    return pids


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo_run(prefect_server: PrefectServer) -> FlowRun:
    """A finished flow run of two tasks (one mapped) that also creates two artifacts."""

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def report(squares: list[int]) -> int:
        create_markdown_artifact(f"# Squares\n\nsum: **{sum(squares)}**", key="demo-summary")
        create_table_artifact([{"x": x, "square": s} for x, s in enumerate(squares)], key="demo-squares")
        return sum(squares)

    @flow(name="webevolver-demo")
    def demo(n: int = 3) -> int:
        return report(square.map(range(n)).result())

    state = demo(return_state=True)
    assert state.result() == 5
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def test_server_is_healthy(prefect_server: PrefectServer) -> None:
    assert httpx.get(f"{prefect_server.api_url}/health").json() is True
    assert os.environ["PREFECT_API_URL"] == PREFECT_API_URL.value() == prefect_server.api_url
    print(f"Prefect server started in {prefect_server.startup_s:.1f} s")


def test_flow_run_and_its_tasks_complete(demo_run: FlowRun) -> None:
    assert demo_run.state_type == StateType.COMPLETED
    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[demo_run.id]))
    with get_client(sync_client=True) as client:  # task run states arrive as events: eventually consistent
        def all_tasks_completed() -> bool:
            runs = client.read_task_runs(flow_run_filter=only_this_run)
            return len(runs) == 4 and all(r.state_type == StateType.COMPLETED for r in runs)

        _wait_until(all_tasks_completed, 120, "4 completed task runs")  # generous: shared CI machines


def test_artifacts_are_readable(demo_run: FlowRun) -> None:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[demo_run.id])))
    by_key = {a.key: a for a in artifacts}
    assert by_key["demo-summary"].type == "markdown"
    assert "sum: **5**" in by_key["demo-summary"].data
    assert by_key["demo-squares"].type == "table"
    assert "square" in by_key["demo-squares"].data and "4" in by_key["demo-squares"].data


async def test_ui_shows_the_flow_run(prefect_server: PrefectServer, demo_run: FlowRun, tmp_path: Path) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{prefect_server.ui_url}/runs/flow-run/{demo_run.id}")
            await page.get_by_text(demo_run.name).first.wait_for(timeout=30_000)
            await page.get_by_text("Completed").first.wait_for(timeout=30_000)
            await page.screenshot(path=tmp_path / "flow-run.png")
        finally:
            await browser.close()
    assert (tmp_path / "flow-run.png").stat().st_size > 10_000


def test_project_file_deploys_the_flows_to_the_process_pool() -> None:
    config = yaml.safe_load(PROJECT_FILE.read_text())
    assert set(DEPLOYMENTS) == {"evolve-round", "evolve", "evaluate", "compare"}
    assert all(d["work_pool"]["name"] == WORK_POOL for d in DEPLOYMENTS.values())
    assert DEPLOYMENTS["evolve-round"]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    assert config["pull"] == [{"prefect.deployments.steps.set_working_directory":
                               {"directory": "{{ project-dir.stdout }}"}}]


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_parameters_fit_the_flow(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    path, _ = deployment["entrypoint"].split(":")
    if not (PROJECT_DIR / path).exists():
        pytest.skip(f"{path} is not written yet")
    the_flow = load_flow_from_entrypoint(str(PROJECT_DIR / deployment["entrypoint"]), use_placeholder_flow=False)
    assert set(deployment["parameters"]) <= set(inspect.signature(the_flow.fn).parameters)
    the_flow.validate_parameters(deployment["parameters"])


def test_deployment_runs_on_a_process_worker(prefect_server: PrefectServer, tmp_path: Path) -> None:
    """prefect.yaml's own build and pull steps, a throw-away flow, `prefect deploy`, a worker, a run."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "smoke_flow.py").write_text(SMOKE_FLOW)
    config = yaml.safe_load(PROJECT_FILE.read_text())
    del config["definitions"]
    config["deployments"] = [{"name": "smoke", "entrypoint": "smoke_flow.py:smoke", "parameters": {"x": 1},
                              "work_pool": {"name": TEST_POOL}}]
    (project / "prefect.yaml").write_text(yaml.safe_dump(config))

    assert ensure_work_pool(prefect_server.env, TEST_POOL) is True
    assert ensure_work_pool(prefect_server.env, TEST_POOL) is False
    deploy_project(prefect_server.env, project)
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(worker_command(TEST_POOL), env=os.environ | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        run = run_deployment("smoke/smoke", parameters={"x": 20}, timeout=150, poll_interval=1)
    finally:
        stop_group(worker, 15)  # a busy machine may take longer to stop it gracefully: not this test's subject
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{log_tail(worker_log)}"
    assert (project / "ran.txt").read_text() == "41"


def test_missing_postgres_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres, "DEBIAN_BIN_DIRS", tmp_path)
    with pytest.raises(PostgresError, match="apt-get install -y postgresql"):
        postgres_bin("pg_ctl")


def test_unknown_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        PrefectServer(tmp_path, database="mysql").start()


def test_server_that_dies_during_start_reports_its_log(tmp_path: Path) -> None:
    server = PrefectServer(tmp_path, database=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/prefect.db")
    with pytest.raises(PrefectServerError, match="exited with code .* during start(.|\n)*unable to open database"):
        server.start()
    assert server.process is None


DETACHED_DATABASE = "postgres" if _postgres_available() else "sqlite"


def test_detached_server_lifecycle(tmp_path: Path) -> None:
    """ensure_server starts one (on DETACHED_DATABASE), reuses it, a flow in a child process reports to it
    (the way commands hand `server.env` on); stop leaves no process."""
    home = tmp_path / "home"
    postgres_before = _our_postgres_pids()
    server = ensure_server(home, database=DETACHED_DATABASE)
    try:
        assert server.database == DETACHED_DATABASE and is_healthy(server.api_url)
        assert server_status(home) == server
        assert ensure_server(home) == server  # reused, not restarted

        done = subprocess.run([sys.executable, "-c", TINY_FLOW], capture_output=True, text=True,
                              env=os.environ | server.env | {"PREFECT_HOME": str(tmp_path / "client")})
        assert done.returncode == 0, done.stderr
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
            assert client.read_flow_run(UUID(done.stdout.split()[-1])).state_type == StateType.COMPLETED
    finally:
        stopped = stop_server(home)
    assert stopped == server
    _wait_until(lambda: not (pid_alive(server.pid) or pid_alive(server.server_pid)), 10, "server exit")
    _wait_until(lambda: not _our_postgres_pids() - postgres_before, 10, "PostgreSQL exit")
    assert server_status(home) is None and stop_server(home) is None
