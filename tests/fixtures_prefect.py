"""Session fixture: one real Prefect server (SQLite, UI on) that every test's flows report to.

Use it from any test module::

    from fixtures_prefect import prefect_server  # noqa: F401  (pytest finds it by name)

    def test_my_flow(prefect_server):
        my_flow()  # runs against prefect_server.api_url; subprocesses inherit it too

While the session lasts, ``PREFECT_API_URL``/``PREFECT_UI_URL`` point at the server and
``PREFECT_HOME`` at a temporary directory, in ``os.environ`` (for subprocesses: workers,
``prefect`` CLI calls) and in Prefect's global settings of this process, which Prefect
reads once at import and is told to re-read here (so every thread and event loop sees
them). The user's own ``~/.prefect`` and profile are never used or touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
