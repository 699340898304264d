"""Start the server a `ModelSpec` names (see `infra.model_server` for the backends), and keep
servers running across the stages of a round when the backend is worth sharing.

Outside a session, `serve(spec)` returns a new, not-yet-started server (use it as a context
manager): one process per stage, as the transformers backend always does.

Inside ``with serving_session() as session:`` (one per process; a nested call joins the
outer session), `serve(spec)` for a backend in `SHARED_BACKENDS` (vllm) returns a *lease* on
a server the session runs: the first lease starts it (30 s to minutes for vLLM on CPU), later
ones, in any stage or thread, reuse it; leaving a lease keeps the server for the next stage;
the session stops every server it started when it ends. Which server a lease gets:

- a server that hot-loads adapters (vLLM on GPUs, `hot_loads_adapters`): ONE per base model;
  a lease on an adapter loads it as a named LoRA module (`adapter_name`: the folder's name
  and a hash of its contents, so a retrained adapter in the same folder gets a new name and
  never serves stale weights). No merging, no restart.
- otherwise (vLLM on CPU, where a merged model answers 2-9x faster than a LoRA module): one
  server per (base model, adapter contents), the adapter merged in, under the same
  `adapter_name`. At most `max_servers` run at once (each holds its weights and KV cache):
  starting another stops the least recently used one that no stage holds.

Other backends (transformers, transformers-cb, openai) keep their per-stage servers inside a
session. Backend "auto" is the fastest CPU backend installed (`resolve_backend`). Every server
start in the process while a session is open, shared or not, is recorded:
``session.start_times()`` is a list of ``{backend, model, adapter, start_s, shared}`` (for the
round's artifacts), ``session.adapter_loads()`` the run-time adapter loads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evolver_core.config import ModelSpec
from evolver_core.models.folders import folder_digest
from evolver_core.models.refs import ModelRef, resolve_model
from infra.model_server import (ModelServer, ServerError, add_start_listener, default_threads, remove_start_listener,
                                vllm_python)

SHARED_BACKENDS = ("vllm",)  # backends whose servers a session keeps across stages (minutes to start)
MAX_SERVERS = 3  # servers a session runs at once: look-ahead and synthesis hold policy, world model, scorer
AUTO = "auto"  # the fastest CPU backend this machine has (`resolve_backend`)
ServerKey = tuple[str, str, "str | None"]  # (backend, base model, adapter name where adapters are merged)


def resolve_backend(name: str) -> str:
    """`name`, or for "auto" the fastest CPU backend installed here: "vllm" when vLLM's CPU
    build is set up (`make setup-vllm`; `webevolver bench serve`: ~4x today's replies/s at 8
    concurrent requests), else "transformers-cb" (continuous batching, ~2.8x at 8)."""
    if name != AUTO:
        return name
    return "vllm" if vllm_python() is not None else "transformers-cb"


def _server(spec: ModelSpec, ref: ModelRef, **opts: Any) -> ModelServer:
    if spec.backend == "openai":
        if not spec.base_url:
            raise ValueError("the openai backend needs --base-url (e.g. https://api.openai.com/v1)")
        return ModelServer.for_backend("openai", ref, base_url=spec.base_url, api_key_env=spec.api_key_env)
    return ModelServer.for_backend(spec.backend, ref, **opts)


def serve(spec: ModelSpec, *, browser: bool = True, **opts: Any) -> ModelServer:
    """A not-yet-started server for `spec` (use it as a context manager); inside a
    `serving_session`, a lease on the session's shared server when the backend hot-loads
    adapters. The `evolver_core.models.serving.ServeModel` the stages are handed.
    `browser=False`: a stage with no browser on the machine (judging, rationales, synthesis,
    fidelity), whose per-stage server takes every core. `opts`: server options for a
    per-stage server (e.g. ``threads``); a lease ignores them (the session's `server_opts`
    made its server)."""
    if spec.backend == AUTO:
        spec = replace(spec, backend=resolve_backend(AUTO))
    ref = resolve_model(spec.model, adapter=spec.adapter)
    session = current_session()
    if session is not None and spec.backend in session.shared_backends:
        return session.lease(spec, ref)
    if not browser:
        opts = {"threads": default_threads(browser=False)} | opts
    return _server(spec, ref, **opts)


def adapter_name(adapter: str | Path) -> str:
    """The LoRA module name of an adapter folder in a shared server: its folder name (with
    its parent's, e.g. ``finetune_wm-adapter``) and 12 hex digits of its contents' hash."""
    path = Path(adapter).resolve()
    return f"{path.parent.name}-{path.name}-{folder_digest(path)[:12]}".replace("=", "")


@dataclass
class _Shared:
    """One server of a session: for one (backend, base model), or (backend, base model,
    adapter) when its backend does not hot-load adapters."""

    server: ModelServer
    lock: threading.Lock = field(default_factory=threading.Lock)
    leases: int = 0  # open leases (a server with none may be stopped to make room)
    used: float = 0.0  # monotonic time of the last lease


class Lease(ModelServer):
    """A stage's handle on a session's shared server: `start` makes sure the server runs and
    the adapter is loaded, `stop` only ends the lease. `model` is the LoRA module name (or the
    base model's name), `client()` talks to the shared server."""

    def __init__(self, session: ServingSession, spec: ModelSpec, ref: ModelRef):
        super().__init__(ref)
        self.session = session
        self.spec = spec
        self.backend = spec.backend  # type: ignore[misc]  (an instance value: the backend it leases)
        self.shared: ModelServer | None = None
        self._model: str | None = None
        self._server_key: ServerKey | None = None

    @property
    def base_url(self) -> str:
        if self.shared is None:
            raise ServerError(f"lease on a shared {self.backend} server is not started")
        return self.shared.base_url

    @property
    def model(self) -> str:
        if self._model is None:
            raise ServerError(f"lease on a shared {self.backend} server is not started")
        return self._model

    @property
    def api_key(self) -> str | None:
        return self.shared.api_key if self.shared is not None else None

    def start(self) -> Lease:
        if self.shared is None:
            self.shared, self._model, self._server_key = self.session.acquire(self.spec, self.ref)
            self.supports_n = self.shared.supports_n  # type: ignore[misc]
            self.structured_outputs = self.shared.structured_outputs  # type: ignore[misc]
            self.logprobs = self.shared.logprobs  # type: ignore[misc]
            self.concurrency = self.shared.concurrency  # type: ignore[misc]
            self.start_s = self.shared.start_s
        return self

    def stop(self) -> None:
        if self.shared is not None:
            self.session.release(self._server_key)  # type: ignore[arg-type]
            self.shared = None

    def failure(self) -> str | None:
        return self.shared.failure() if self.shared is not None else None

    def __repr__(self) -> str:
        return f"Lease({self._model!r} on {self.shared!r})"


class ServingSession:
    """The servers one process shares across stages (see the module docstring).

    `server_opts`: keyword arguments for every shared server (e.g. ``threads``,
    ``max_model_len``, ``tensor_parallel_size`` for `VLLMServer`)."""

    def __init__(self, *, shared_backends: tuple[str, ...] = SHARED_BACKENDS, max_servers: int = MAX_SERVERS,
                 **server_opts: Any):
        self.shared_backends = tuple(shared_backends)
        self.max_servers = max_servers
        self.server_opts = server_opts
        self._servers: dict[ServerKey, _Shared] = {}
        self._hot: dict[tuple[str, str], bool] = {}  # (backend, base) -> hot-loads adapters
        self._lock = threading.Lock()
        self._starts: list[dict] = []
        self._loads: list[dict] = []
        self._shared_ids: set[int] = set()

    # -- leases ------------------------------------------------------------------------

    def lease(self, spec: ModelSpec, ref: ModelRef | None = None) -> Lease:
        return Lease(self, spec, ref or resolve_model(spec.model, adapter=spec.adapter))

    def _key(self, spec: ModelSpec, ref: ModelRef) -> ServerKey:
        """(backend, base, None) for a server that hot-loads adapters or a lease without one,
        else (backend, base, adapter_name)."""
        if not ref.adapter:
            return spec.backend, ref.base, None
        hot = self._hot.get((spec.backend, ref.base))
        if hot is None:  # ask an unstarted server of the backend (constructing one starts nothing)
            probe = _server(spec, ModelRef(base=ref.base), **self.server_opts)
            hot = self._hot[(spec.backend, ref.base)] = bool(getattr(probe, "hot_loads_adapters", False))
        return spec.backend, ref.base, None if hot else adapter_name(ref.adapter)

    def acquire(self, spec: ModelSpec, ref: ModelRef) -> tuple[ModelServer, str, ServerKey]:
        """The running server for `ref` (started on first use), the model name requests must
        carry (the adapter's, loaded now if it is new to a hot-loading server, or the base
        model's) and the server's key, which `release` takes."""
        key = self._key(spec, ref)
        hot = ref.adapter is not None and key[2] is None
        with self._lock:
            entry = self._servers.get(key)
            if entry is None:
                served = (ModelRef(base=ref.base, served_name=Path(ref.base).name) if key[2] is None
                          else ModelRef(base=ref.base, adapter=ref.adapter, served_name=key[2]))
                entry = self._servers[key] = _Shared(_server(spec, served, **self.server_opts))
                self._shared_ids.add(id(entry.server))
            entry.leases += 1  # held from here, so making room never stops it
            entry.used = time.monotonic()
        try:
            with entry.lock:  # one start per server; other stages wait for it
                server = entry.server
                if server.failure() is not None:
                    server.stop()  # it died since the last stage: start a new one
                if getattr(server, "process", True) is None:
                    self._make_room(keep=entry)
                    server.start()
                name = server.model
                if hot:
                    name = adapter_name(ref.adapter)
                    if name not in getattr(server, "adapters", {}):
                        t0 = time.monotonic()
                        server.load_adapter(name, ref.adapter)  # type: ignore[attr-defined]
                        self._loads.append({"backend": spec.backend, "model": ref.base, "adapter": ref.adapter,
                                            "name": name, "load_s": round(time.monotonic() - t0, 3)})
        except BaseException:
            self.release(key)
            raise
        return server, name, key

    def _make_room(self, keep: _Shared) -> None:
        """Stop least recently used servers no stage holds until one more fits `max_servers`."""
        with self._lock:
            running = [e for e in self._servers.values()
                       if e is not keep and getattr(e.server, "process", None) is not None]
            idle = sorted((e for e in running if e.leases == 0), key=lambda e: e.used)
            surplus = len(running) + 1 - self.max_servers
            victims = idle[:max(0, surplus)]
        for entry in victims:
            with entry.lock:
                if entry.leases == 0:
                    entry.server.stop()

    def release(self, key: ServerKey) -> None:
        with self._lock:
            entry = self._servers.get(key)
            if entry is not None and entry.leases > 0:
                entry.leases -= 1

    def leases(self) -> dict[ServerKey, int]:
        """Open leases per server: (backend, base model, adapter name or None)."""
        with self._lock:
            return {key: entry.leases for key, entry in self._servers.items()}

    # -- records -----------------------------------------------------------------------

    def _record_start(self, server: ModelServer) -> None:
        self._starts.append({"backend": server.backend, "model": server.ref.base, "adapter": server.ref.adapter,
                             "start_s": round(server.start_s or 0.0, 2), "shared": id(server) in self._shared_ids})

    def start_times(self) -> list[dict]:
        """Every server start while the session was open: ``{backend, model, adapter,
        start_s, shared}`` in start order (shared: a session server, kept across stages)."""
        return [dict(s) for s in self._starts]

    def adapter_loads(self) -> list[dict]:
        """Adapters loaded into shared servers: ``{backend, model, adapter, name, load_s}``."""
        return [dict(s) for s in self._loads]

    def summary(self) -> dict:
        starts = self.start_times()
        return {"server_starts": starts, "adapter_loads": self.adapter_loads(),
                "start_s_total": round(sum(s["start_s"] for s in starts), 2)}

    # -- lifetime ----------------------------------------------------------------------

    def open(self) -> ServingSession:
        add_start_listener(self._record_start)
        return self

    def close(self) -> None:
        """Stop every shared server; stop recording."""
        remove_start_listener(self._record_start)
        with self._lock:
            entries, self._servers = list(self._servers.values()), {}
        for entry in entries:
            entry.server.stop()


_session_lock = threading.Lock()
_session: ServingSession | None = None


def current_session() -> ServingSession | None:
    """The process's open serving session, if any."""
    return _session


@contextmanager
def serving_session(**opts: Any) -> Iterator[ServingSession]:
    """Share servers across the stages run inside (module docstring); a nested call yields
    the session already open (its `opts` are ignored)."""
    global _session
    with _session_lock:
        outer = _session
        if outer is None:
            _session = ServingSession(**opts).open()
        session = _session
    if outer is not None:
        yield outer
        return
    try:
        yield session
    finally:
        with _session_lock:
            _session = None
        session.close()
