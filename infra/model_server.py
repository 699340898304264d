"""OpenAI-compatible model servers: start one for a `ModelRef`, hand out its URL and model
name, stop it without leaving processes behind.

Why: every model role is reached through the OpenAI API (`evolver_core.llm.LLMClient`), so
the same pipeline runs on one laptop (a 135M model on CPU) and at scale (vLLM on GPUs, or a
hosted endpoint); only the backend changes. Backends (`ModelServer.for_backend(name, ...)`):

- ``transformers`` (the embedded default): ``transformers serve <folder>`` on CPU, pinned to
  one local model folder, fully offline (``HF_HUB_OFFLINE=1``). It cannot load PEFT adapters,
  so an adapter is merged into its base first (cached by content hash,
  `evolver_core.models.merge_adapter`). It serves the model under the folder path (requests
  naming anything else are refused), it ignores the request field ``n`` (the client it hands
  out fans such requests out) and it only samples when the model's generation config says
  ``do_sample: true`` (the folders `evolver_core.models` writes do; temperature 0 is greedy).
  Its torch threads default to half the cores (`default_threads`): on a busy 2-core machine
  one thread generated ~3x faster than two fighting over the cores.
- ``vllm``: ``vllm serve <base> --enable-lora`` with the adapter as a LoRA module and runtime
  LoRA updating on, so `VLLMServer.load_adapter` serves a new round's adapter without a
  restart; requests name the adapter. Like every process backend it runs with the Hub
  offline: give it local model folders.
- ``openai``: an external endpoint (``base_url``) with its key read from an environment
  variable when a client is made; start only checks health, stop does nothing.

Process backends run in their own process group (killed as a group on stop, and at
interpreter exit if a caller forgot), log to a file under ``$WEBEVOLVER_HOME/logs``, listen
on a free port on 127.0.0.1, and are healthy once ``GET /v1/models`` answers 200. A server
that exits during start, or later, is reported with the tail of its log (`ServerError`;
`failure()` for the later case, which clients made by `client()` add to their errors).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import httpx

from evolver_core.llm import LLMClient
from evolver_core.models import ModelRef, merge_adapter, webevolver_home
from infra.process import ServerError, await_health, free_port, stop_group, wait_healthy

LOG_TAIL_LINES = 40
DEFAULT_STARTUP_TIMEOUT_S = 180.0
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def default_threads() -> int:
    """CPU threads for a CPU model server: half the cores, the rest for browsers and workers.
    (Oversubscribed OpenMP threads spin against each other: on 2 busy cores one thread
    generated 3x faster than two.)"""
    return max(1, (os.cpu_count() or 2) // 2)


class ModelServer(ABC):
    """An OpenAI-compatible endpoint for one model; a context manager (start/stop)."""

    backend: ClassVar[str]
    supports_n: ClassVar[bool] = True
    # Requests a client keeps in flight. A server that generates one request at a time
    # gains nothing from more, and queued requests would spend their timeout waiting.
    concurrency: ClassVar[int] = 4

    def __init__(self, ref: ModelRef, *, host: str = "127.0.0.1", port: int | None = None,
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S):
        self.ref = ref
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in ``/v1``."""
        if self.port is None:
            raise ServerError(f"{self.backend} server is not started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    @abstractmethod
    def model(self) -> str:
        """The model name requests must carry."""

    @property
    def api_key(self) -> str | None:
        return None

    @abstractmethod
    def start(self) -> ModelServer: ...

    @abstractmethod
    def stop(self) -> None: ...

    def failure(self) -> str | None:
        """Why the server is not serving (e.g. its process exited, with the log's tail), or None."""
        return None

    def client(self, **opts: Any) -> LLMClient:
        """An `LLMClient` for this server (`opts`: LLMClient keyword arguments, e.g. model=...)."""
        opts = {"model": self.model, "api_key": self.api_key, "supports_n": self.supports_n,
                "concurrency": self.concurrency,
                "diagnose": self.failure} | opts
        return LLMClient(self.base_url, **opts)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.port is not None else "not started"
        return f"{type(self).__name__}({self.ref.served_name!r}, {where})"

    @staticmethod
    def for_backend(name: str, ref: ModelRef, **opts: Any) -> ModelServer:
        """The server class registered as `name` ("transformers", "vllm", "openai")."""
        try:
            cls = BACKENDS[name]
        except KeyError:
            raise ValueError(f"unknown model server backend {name!r}; expected one of {sorted(BACKENDS)}") from None
        return cls(ref, **opts)


class ProcessServer(ModelServer):
    """A server run as a child process in its own process group, logging to a file."""

    def __init__(self, ref: ModelRef, *, log_dir: Path | str | None = None, **opts: Any):
        super().__init__(ref, **opts)
        self.log_dir = Path(log_dir) if log_dir is not None else webevolver_home() / "logs"
        self.log_path: Path | None = None
        self.process: subprocess.Popen | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The command line; called after the port is chosen."""

    def env(self) -> dict[str, str]:
        return os.environ | OFFLINE_ENV

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> ProcessServer:
        if self.process is not None:
            return self
        self.port = self.port or free_port(self.host)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.log_path = self.log_dir / f"{self.backend}-{self.port}-{stamp}-{os.getpid()}.log"
        command = self.command()
        with self.log_path.open("wb") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env(), start_new_session=True)
        atexit.register(self.stop)
        await_health(f"{self.base_url}/models", self.startup_timeout_s, check_alive=self._raise_if_dead,
                     stop=self.stop, on_timeout=lambda why: ServerError(
                         f"{self.backend} server for {self.ref.served_name!r} did not become healthy: "
                         f"{why}\n{self.log_tail()}"))
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout_s`; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        stop_group(process, timeout_s)

    def failure(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        return (f"{self.backend} server (pid {self.process.pid}) exited with code {self.process.returncode}\n"
                f"{self.log_tail()}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"last {len(tail)} lines of {self.log_path}:\n" + "\n".join(tail)

    def _raise_if_dead(self) -> None:
        if (why := self.failure()) is not None:
            raise ServerError(f"{self.backend} server for {self.ref.served_name!r} died during start: {why}")


class TransformersServer(ProcessServer):
    """``transformers serve`` pinned to one local model folder (adapter merged in)."""

    backend = "transformers"
    supports_n = False
    concurrency = 1

    def __init__(self, ref: ModelRef, *, device: str = "cpu", dtype: str = "auto", threads: int | None = None,
                 cache_dir: Path | str | None = None, **opts: Any):
        super().__init__(ref, **opts)
        if not ref.is_local:
            raise ValueError(f"the transformers backend serves local model folders; {ref.base!r} is not one")
        self.device = device
        self.dtype = dtype
        self.threads = threads or default_threads()
        self.cache_dir = cache_dir
        self.model_dir: Path | None = None

    @property
    def model(self) -> str:
        if self.model_dir is None:
            self.model_dir = merge_adapter(self.ref, self.cache_dir)
        return str(self.model_dir)

    def env(self) -> dict[str, str]:
        return super().env() | {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "transformers.cli.transformers", "serve", self.model,
                "--host", self.host, "--port", str(self.port), "--device", self.device, "--dtype", self.dtype,
                "--log-level", "info"]


class VLLMServer(ProcessServer):
    """``vllm serve`` with LoRA enabled; the adapter (if any) is served under `ref.served_name`."""

    backend = "vllm"

    def __init__(self, ref: ModelRef, *, max_lora_rank: int = 64, extra_args: tuple[str, ...] = (),
                 executable: str = "vllm", **opts: Any):
        super().__init__(ref, **opts)
        self.max_lora_rank = max_lora_rank
        self.extra_args = tuple(extra_args)
        self.executable = executable

    @property
    def base_name(self) -> str:
        """The name the base model is served under (requests that want no adapter use it)."""
        return Path(self.ref.base).name if self.ref.adapter else self.ref.served_name

    @property
    def model(self) -> str:
        return self.ref.served_name

    def command(self) -> list[str]:
        command = [self.executable, "serve", self.ref.base, "--host", self.host, "--port", str(self.port),
                   "--served-model-name", self.base_name, "--enable-lora", "--max-lora-rank", str(self.max_lora_rank)]
        if self.ref.adapter:
            command += ["--lora-modules", f"{self.ref.served_name}={self.ref.adapter}"]
        return command + list(self.extra_args)

    def env(self) -> dict[str, str]:
        return super().env() | {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}

    @staticmethod
    def load_adapter_body(name: str, path: Path | str, *, replace: bool = False) -> dict:
        body: dict = {"lora_name": name, "lora_path": str(path)}
        if replace:
            body["load_inplace"] = True
        return body

    def load_adapter(self, name: str, path: Path | str, *, replace: bool = False) -> str:
        """Serve the adapter at `path` as model `name` from now on (no restart); returns `name`.
        `replace=True` swaps the weights of an already loaded adapter of that name."""
        self._post("load_lora_adapter", self.load_adapter_body(name, path, replace=replace))
        return name

    def unload_adapter(self, name: str) -> None:
        self._post("unload_lora_adapter", {"lora_name": name})

    def _post(self, endpoint: str, body: dict) -> None:
        response = httpx.post(f"{self.base_url}/{endpoint}", json=body, timeout=120)
        if response.status_code != 200:
            raise ServerError(f"vllm {endpoint} {body} failed: HTTP {response.status_code}: {response.text[:500]}")


class OpenAIEndpoint(ModelServer):
    """An external OpenAI-compatible endpoint; the key comes from `api_key_env` (None: no key)."""

    backend = "openai"

    def __init__(self, ref: ModelRef, *, base_url: str = "https://api.openai.com/v1",
                 api_key_env: str | None = "OPENAI_API_KEY", startup_timeout_s: float = 30.0):
        super().__init__(ref, startup_timeout_s=startup_timeout_s)
        self._base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def model(self) -> str:
        return self.ref.base

    @property
    def api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ServerError(f"environment variable {self.api_key_env} (the API key for {self.base_url}) is not set")
        return key

    def start(self) -> OpenAIEndpoint:
        key = self.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else None
        try:
            wait_healthy(f"{self.base_url}/models", self.startup_timeout_s, headers=headers)
        except TimeoutError as exc:
            raise ServerError(f"OpenAI-compatible endpoint is not healthy: {exc}") from None
        return self

    def stop(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"OpenAIEndpoint({self.model!r}, {self.base_url})"


BACKENDS: dict[str, type[ModelServer]] = {
    "transformers": TransformersServer,
    "vllm": VLLMServer,
    "openai": OpenAIEndpoint,
}
