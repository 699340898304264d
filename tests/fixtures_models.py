"""Model fixtures shared by the model-layer tests: the tiny model, one real server on it,
a scripted fake OpenAI-compatible endpoint for protocol-level tests, and random LoRA adapters.

`conftest.py` imports the fixtures, so a test module names them as arguments (and imports
only the helpers: `FakeEndpoint`, `chat_response`, `gone`, `make_adapter`). The expensive ones
memoise in `_SHARED`: the tiny model is built once and one tiny server runs per session.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evolver_core.models.embedded import tiny_model_dir
from evolver_core.models.refs import ModelRef
from infra.model_server import ModelServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_SHARED: dict[str, object] = {}


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "cache" not in _SHARED:
        _SHARED["cache"] = tmp_path_factory.mktemp("models")
    return _SHARED["cache"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def tiny_model(models_cache: Path) -> Path:
    return tiny_model_dir(models_cache)


@pytest.fixture(scope="session")
def tiny_ref(tiny_model: Path) -> ModelRef:
    return ModelRef(base=str(tiny_model), served_name="tiny")


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "logs" not in _SHARED:
        _SHARED["logs"] = tmp_path_factory.mktemp("server-logs")
    return _SHARED["logs"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def tiny_server(tiny_ref: ModelRef, models_cache: Path, server_logs: Path) -> Iterator[ModelServer]:
    """A real `transformers serve` process on the tiny model, shared by the session."""
    if "server" not in _SHARED:
        _SHARED["server"] = ModelServer.for_backend("transformers", tiny_ref, cache_dir=models_cache,
                                                    log_dir=server_logs).start()
    server: ModelServer = _SHARED["server"]  # type: ignore[assignment]
    yield server
    server.stop()  # idempotent: every importing module's copy of this fixture ends here


def gone(pid: int) -> bool:
    """No live process has this pid or belongs to its process group (zombies waiting to be
    reaped by init count as gone). Reads /proc: Linux only."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except OSError:
            continue  # exited meanwhile
        if fields[0] != "Z" and pid in (int(stat.parent.name), int(fields[2])):
            return False
    return True


def chat_response(content: str = "Thought: ok\nAction: wait", *, prompt_tokens: int = 7,
                  completion_tokens: int = 5) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict | None


@dataclass
class FakeEndpoint:
    """A scripted OpenAI-compatible HTTP server: each request takes the next scripted
    (status, json) reply, or the default reply once the script is used up."""

    script: list[tuple[int, dict]] = field(default_factory=list)
    default: tuple[int, dict] = (200, {})
    delay_s: float = 0.0  # how long each reply takes
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        endpoint = self
        lock, in_flight = threading.Lock(), [0]

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    endpoint.requests.append(Recorded(self.command, self.path, headers, body))
                    status, payload = endpoint.script.pop(0) if endpoint.script else endpoint.default
                    in_flight[0] += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, in_flight[0])
                time.sleep(endpoint.delay_s)
                with lock:
                    in_flight[0] -= 1
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_endpoint() -> Iterator[FakeEndpoint]:
    endpoint = FakeEndpoint(default=(200, chat_response()))
    yield endpoint
    endpoint.close()


def make_adapter(base: Path | str, out: Path, seed: int, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """A random (non-zero) LoRA adapter on `base`, saved like `evolver_core.training.finetune` saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules=list(targets), init_lora_weights=False,
                                      task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out
