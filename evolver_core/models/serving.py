"""What the domain needs from a model server, declared here and satisfied by `infra`.

A stage that uses models is handed `serve`, a `ServeModel`: ``serve(spec)`` is a server for
the model a `ModelSpec` names, entered as a context manager (started, or leased from a
session that shares servers, on entry; stopped or released on exit), and what it yields is
`Served`: ``.client()`` talks to it. ``serve(spec, browser=False)`` is for a stage with no
browser on the machine, whose server may take every core. The real factory is
`infra.serving.serve`; the tasks, flows and CLI pass it in, so no domain module imports
`infra`, and a notebook or a test can pass its own.

`Served` builds the `LLMClient` from what a server says of itself (where it listens, the
model name requests carry, what it can do), so every backend hands out the same client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from evolver_core.config import ModelSpec
from evolver_core.llm import LLMClient


class Served(ABC):
    """An OpenAI-compatible endpoint for one model, as a stage uses it: `client()`."""

    supports_n: ClassVar[bool] = True  # answers a request's ``n`` choices (else the client fans out)
    structured_outputs: ClassVar[bool] = False  # decodes within a request's regex (`LLMClient.chat`)
    logprobs: ClassVar[bool] = False  # returns token log-probabilities (`LLMClient.chat`'s top_logprobs)
    # Requests a client keeps in flight. A server that generates one request at a time
    # gains nothing from more, and queued requests would spend their timeout waiting.
    concurrency: ClassVar[int] = 4

    @property
    @abstractmethod
    def base_url(self) -> str:
        """The OpenAI base URL, ending in ``/v1``."""

    @property
    @abstractmethod
    def model(self) -> str:
        """The model name requests must carry."""

    @property
    def api_key(self) -> str | None:
        return None

    def failure(self) -> str | None:
        """Why the server is not serving (e.g. its process exited, with the log's tail), or None."""
        return None

    def client(self, **opts: Any) -> LLMClient:
        """An `LLMClient` for this server (`opts`: LLMClient keyword arguments, e.g. model=...)."""
        opts = {"model": self.model, "api_key": self.api_key, "supports_n": self.supports_n,
                "structured": self.structured_outputs, "logprobs": self.logprobs, "concurrency": self.concurrency,
                "diagnose": self.failure} | opts
        return LLMClient(self.base_url, **opts)


class ServeModel(Protocol):
    """A model-server factory (module docstring)."""

    def __call__(self, spec: ModelSpec, *, browser: bool = True) -> AbstractContextManager[Served]: ...
