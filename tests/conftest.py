"""Shared fixtures: real pages served on 127.0.0.1 and a minimal suite that opens them, fake
OpenAI chat servers per role, and (imported) the model and Prefect fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evolver_core.contracts.task import EpisodeState, Task
from evolver_core.suites.httpserver import LocalHTTPServer
# Fixtures defined once here, so every module shares ONE instance of each session fixture (a
# fixture imported into several test modules would be a separate session fixture per module,
# and a second Prefect server in one process breaks Prefect's event delivery).
from fixtures_models import fake_endpoint, models_cache, server_logs, tiny_model, tiny_ref, tiny_server  # noqa: F401
from fixtures_prefect import prefect_server  # noqa: F401
from helpers import ChatServer, Responder

PAGES = Path(__file__).parent / "pages"


class PagesSuite:
    """Opens the test pages; no evaluator, no solver."""

    name = "pages"

    def __init__(self, server: LocalHTTPServer):
        self.server = server

    def task(self, page: str = "form.html", **kw) -> Task:
        return Task(id=f"pages/{page}", suite=self.name, site="pages", start_url=self.server.url + page,
                    query="test", **kw)

    def tasks(self, split=None):
        return [self.task()]

    async def start(self):
        pass

    async def stop(self):
        pass

    async def begin(self, task, page):
        await page.goto(task.start_url)
        return task

    async def evaluate(self, state: EpisodeState):
        return None

    def solver(self, task):
        return None


@pytest.fixture(scope="session")
def pages_server():
    server = LocalHTTPServer.static(str(PAGES))
    yield server
    server.close()


@pytest.fixture
def pages_suite(pages_server):
    return PagesSuite(pages_server)


@pytest.fixture
def servers() -> Iterator[Callable[[Responder, str], ChatServer]]:
    """Makes `ChatServer`s (a responder and the model name each serves); closes them after the test."""
    made: list[ChatServer] = []

    def make(respond: Responder, model: str) -> ChatServer:
        made.append(ChatServer(respond, model))
        return made[-1]

    yield make
    for s in made:
        s.close()
