"""Session fixture: one real Prefect server (SQLite, UI on) that every test's flows report to
(`conftest.py` imports it, so any test module names it as an argument)::

    def test_my_flow(prefect_server):
        my_flow()  # runs against prefect_server.api_url; subprocesses inherit it too

While the session lasts, ``PREFECT_API_URL``/``PREFECT_UI_URL`` point at the server and
``PREFECT_HOME`` at a temporary directory, in ``os.environ`` (for subprocesses: workers,
``prefect`` CLI calls) and in Prefect's global settings of this process, which Prefect
reads once at import and is told to re-read here (so every thread and event loop sees
them). The user's own ``~/.prefect`` and profile are never used or touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.context import refresh_global_settings_context
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker

from infra.prefect_server import PrefectServer


def drain_prefect_workers(timeout_s: float = 10.0) -> None:
    """Send the logs and events this process still queues (call before stopping their server)."""
    APILogWorker.drain_all(timeout=timeout_s)
    EventsWorker.drain_all(timeout=timeout_s)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-home")  # this process's (client) home; the server's is below
    with PrefectServer(home / "server") as server, pytest.MonkeyPatch.context() as env:
        env.delenv("PREFECT_PROFILE", raising=False)
        for name, value in (server.env | {"PREFECT_HOME": str(home)}).items():
            env.setenv(name, value)
        refresh_global_settings_context()
        try:
            yield server
        finally:
            drain_prefect_workers()
    refresh_global_settings_context()  # back to the environment as it was


def task_states(flow_run_id, expected: str | set[str], count: int, timeout_s: float = 120) -> dict[str, str]:
    """Task run states of a flow run once `count` of them are in `expected` (a state name or a set
    of them): they reach the server as events, so they are eventually consistent."""
    expected = {expected} if isinstance(expected, str) else expected
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            states = {r.name: r.state.name for r in runs}
            if (len(states) == count and set(states.values()) <= expected) or time.monotonic() > deadline:
                return states
            time.sleep(0.5)
