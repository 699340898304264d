"""Model folders and servers: the tiny model, adapter merging, the transformers server's
lifecycle (real processes), and the vLLM / openai backends' protocol."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from evolver_core.models.embedded import tiny_model_dir
from evolver_core.models.folders import folder_digest
from evolver_core.models.merge import merge_adapter
from evolver_core.models.refs import ModelRef, resolve_model
from fixtures_models import FakeEndpoint, gone, make_adapter
from infra.model_server import (
    CB_CONCURRENCY, CB_MAX_BATCH_TOKENS, CB_NUM_BLOCKS, ModelServer, OpenAIEndpoint, ProcessServer, ServerError,
    TransformersServer, VLLMServer, default_threads, free_port,
)


# -- model folders -----------------------------------------------------------------------

def test_tiny_model_is_deterministic_and_chat_ready(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    again = tiny_model_dir(tmp_path)
    assert folder_digest(again) == folder_digest(tiny_model)
    config = AutoConfig.from_pretrained(tiny_model)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.head_dim) == (64, 2, 2, 32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert 500 < len(tokenizer) <= 2048
    text = tokenizer.apply_chat_template([{"role": "user", "content": "[3] button 'Submit'"}],
                                         add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\n[3] button 'Submit'<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: lossless
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"


def test_resolve_model(tiny_model: Path, models_cache: Path, tmp_path: Path) -> None:
    tiny = resolve_model("tiny", cache_dir=models_cache)
    assert tiny == ModelRef(base=str(tiny_model), served_name="tiny")
    assert resolve_model(str(tiny_model)).served_name == tiny_model.name
    remote = resolve_model("meta-llama/Llama-3.3-70B-Instruct")
    assert (remote.base, remote.adapter, remote.served_name) == ("meta-llama/Llama-3.3-70B-Instruct", None,
                                                                 "meta-llama/Llama-3.3-70B-Instruct")
    adapter = tmp_path / "round-1"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model)}))
    ref = resolve_model(str(adapter))
    assert (ref.base, ref.adapter, ref.served_name) == (str(tiny_model), str(adapter), "round-1")
    assert resolve_model("tiny", adapter=adapter, served_name="p1", cache_dir=models_cache).served_name == "p1"


def test_merge_adapter_equals_peft_logits_and_is_cached(tiny_model: Path, models_cache: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    ref = resolve_model(str(adapter), cache_dir=models_cache)

    merged_dir = merge_adapter(ref, models_cache)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        want, got = peft_model(ids).logits, merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model)(ids).logits
    assert not torch.allclose(want, plain, atol=1e-4)  # the adapter changes the model...
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)  # ...and the merge keeps that change
    assert json.loads((merged_dir / "generation_config.json").read_text())["do_sample"] is True

    stamp = (merged_dir / "model.safetensors").stat().st_mtime_ns
    t0 = time.monotonic()
    assert merge_adapter(ref, models_cache) == merged_dir
    assert time.monotonic() - t0 < 2.0
    assert (merged_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert merge_adapter(ModelRef(base=str(tiny_model))) == tiny_model  # nothing to merge

    server = TransformersServer(ref, cache_dir=models_cache)
    assert server.model == str(merged_dir)  # the transformers backend serves the merged folder


# -- the transformers server: a real process ---------------------------------------------

def test_server_lifecycle(tiny_server: ModelServer, tiny_model: Path) -> None:
    from infra.process import get_json

    assert tiny_server.base_url.startswith("http://127.0.0.1:") and tiny_server.base_url.endswith("/v1")
    assert tiny_server.model == str(tiny_model)
    models = get_json(f"{tiny_server.base_url}/models")
    assert [m["id"] for m in models["data"]] == [tiny_server.model]
    assert tiny_server.failure() is None
    assert tiny_server.log_path is not None and tiny_server.log_path.exists()


class ShellServer(ProcessServer):
    """A stand-in server process (a shell command) for the process-management paths."""

    backend = "shell"

    def __init__(self, script: str, **opts: object):
        super().__init__(ModelRef(base="fake"), **opts)  # type: ignore[arg-type]
        self.script = script

    @property
    def model(self) -> str:
        return "fake"

    def command(self) -> list[str]:
        return ["sh", "-c", self.script.format(port=self.port)]


def test_stop_kills_the_whole_process_group_even_when_the_body_fails(tmp_path: Path) -> None:
    (tmp_path / "www" / "v1").mkdir(parents=True)
    (tmp_path / "www" / "v1" / "models").write_text('{"data": []}')
    script = (f"sleep 300 & echo $! > {tmp_path}/child.pid; "
              f"exec {sys.executable} -m http.server {{port}} --bind 127.0.0.1 --directory {tmp_path}/www")
    server = ShellServer(script, log_dir=tmp_path)
    with pytest.raises(RuntimeError, match="test body failed"):
        with server:
            pid, child = server.pid, int((tmp_path / "child.pid").read_text())
            assert pid is not None and not gone(pid) and not gone(child)
            raise RuntimeError("test body failed")
    assert server.pid is None
    assert gone(pid) and gone(child)  # the server and the child it started
    server.stop()  # idempotent


def test_server_that_dies_during_start_reports_its_log(tmp_path: Path) -> None:
    server = ShellServer("echo loading weights; echo 'ValueError: no such architecture' >&2; exit 3", log_dir=tmp_path)
    with pytest.raises(ServerError) as info:
        server.start()
    message = str(info.value)
    assert "died during start" in message and "exited with code 3" in message
    assert "ValueError: no such architecture" in message and str(server.log_path) in message
    assert server.pid is None


def test_server_that_never_answers_times_out_with_its_log(tmp_path: Path) -> None:
    server = ShellServer("echo still loading; exec sleep 60", log_dir=tmp_path, startup_timeout_s=1)
    with pytest.raises(ServerError, match="did not become healthy") as info:
        server.start()
    assert "still loading" in str(info.value)
    assert server.pid is None


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown model server backend"):
        ModelServer.for_backend("tgi", ModelRef(base="x"))


def test_transformers_command_line_and_env(tiny_ref: ModelRef, models_cache: Path) -> None:
    server = TransformersServer(tiny_ref, cache_dir=models_cache, port=8124, threads=3)
    assert server.command()[1:] == ["-m", "transformers.cli.transformers", "serve", tiny_ref.base,
                                    "--host", "127.0.0.1", "--port", "8124", "--device", "cpu", "--dtype", "auto",
                                    "--log-level", "info"]
    env = server.env()
    assert (env["OMP_NUM_THREADS"], env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]) == ("3", "1", "1")
    assert TransformersServer(tiny_ref, cache_dir=models_cache).threads >= 1


def test_transformers_backend_needs_a_local_folder() -> None:
    with pytest.raises(ValueError, match="local model folders"):
        TransformersServer(ModelRef(base="meta-llama/Llama-3.3-70B-Instruct"))


# -- continuous batching: one real server on the tiny model -------------------------------

def test_transformers_continuous_batching_command_line(tiny_ref: ModelRef, models_cache: Path) -> None:
    plain = TransformersServer(tiny_ref, cache_dir=models_cache, port=8124)
    cb = ModelServer.for_backend("transformers-cb", tiny_ref, cache_dir=models_cache, port=8124, threads=2)
    assert isinstance(cb, TransformersServer) and cb.continuous_batching and cb.backend == "transformers-cb"
    assert cb.command() == plain.command() + ["--continuous-batching", "--cb-num-blocks", str(CB_NUM_BLOCKS),
                                              "--cb-max-batch-tokens", str(CB_MAX_BATCH_TOKENS)]  # not 60% of RAM
    assert "--continuous-batching" not in plain.command()
    assert (plain.concurrency, cb.concurrency) == (1, CB_CONCURRENCY)  # clients keep that many in flight
    assert cb.env()["OMP_NUM_THREADS"] == "2"
    assert TransformersServer(tiny_ref, cache_dir=models_cache, continuous_batching=True).continuous_batching


async def test_continuous_batching_serves_concurrent_requests_like_the_plain_server(
        tiny_server: ModelServer, tiny_ref: ModelRef, models_cache: Path, server_logs: Path) -> None:
    import asyncio

    prompts = [[{"role": "user", "content": f"[{i}] button 'Submit {i}'"}] for i in range(1, 4)]
    plain = [await tiny_server.client().chat(p, max_tokens=12) for p in prompts]
    with ModelServer.for_backend("transformers-cb", tiny_ref, cache_dir=models_cache, log_dir=server_logs) as cb:
        assert cb.start_s is not None and cb.start_s > 0
        client = cb.client()
        batched = await asyncio.gather(*(client.chat(p, max_tokens=12) for p in prompts))
    assert [r.text for r in batched] == [r.text for r in plain]  # temperature 0: the same replies
    assert all(r.completion_tokens > 0 for r in batched)


def test_start_time_is_recorded(tiny_server: ModelServer) -> None:
    assert tiny_server.start_s is not None and 0 < tiny_server.start_s < 180


def test_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBEVOLVER_SERVER_THREADS", raising=False)
    cores = os.cpu_count() or 2
    assert default_threads() == max(1, cores // 2)  # a browser shares the machine
    assert default_threads(browser=False) == cores  # stages without one use every core
    monkeypatch.setenv("WEBEVOLVER_SERVER_THREADS", "3")
    assert default_threads() == default_threads(browser=False) == 3


# -- vLLM: command line and adapter requests (the real server: tests/test_vllm.py) -------

def test_vllm_command_line_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBEVOLVER_VLLM_PYTHON", "/opt/vllm/bin/python")
    ref = ModelRef(base="/models/smollm2", adapter="/adapters/round-2", served_name="policy-r2")
    server = VLLMServer(ref, port=8123, extra_args=("--enforce-eager",), log_dir=tmp_path, device="cpu", threads=2,
                        runtime_lora=True)
    assert server.command() == [
        "/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/smollm2",
        "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "smollm2", "--enable-lora",
        "--max-lora-rank", "64", "--max-loras", "4", "--lora-modules", "policy-r2=/adapters/round-2",
        "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager"]  # eager once, on CPU by default
    assert server.model == "policy-r2"  # requests name the adapter
    env = server.env()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["HF_HUB_OFFLINE"] == "1"
    assert (env["VLLM_CPU_KVCACHE_SPACE"], env["VLLM_CPU_OMP_THREADS_BIND"], env["OMP_NUM_THREADS"]) == \
        ("1", "nobind", "2")
    assert server.startup_timeout_s >= 600  # minutes on a busy CPU
    plain = VLLMServer(ModelRef(base="/models/smollm2", served_name="smollm2"), port=8123, device="cpu")
    assert not plain.hot_loads_adapters and "--enable-lora" not in plain.command()  # CPU: merged models
    assert plain.command()[plain.command().index("--model") + 1] == "/models/smollm2" and plain.model == "smollm2"
    assert plain.command()[-1] == "--enforce-eager" and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in plain.env()
    with pytest.raises(ServerError, match="cannot load adapters"):
        plain.load_adapter("x", "/adapters/x")
    gpu = VLLMServer(ModelRef(base="Qwen/Qwen2.5-7B-Instruct"), port=8123, device="cuda", tensor_parallel_size=4,
                     max_model_len=16384)
    command = gpu.command()
    assert gpu.hot_loads_adapters and "--enable-lora" in command and "--enforce-eager" not in command
    assert "--dtype" not in command and command[command.index("--tensor-parallel-size") + 1] == "4"
    assert command[command.index("--max-model-len") + 1] == "16384"
    assert not any(k.startswith("VLLM_CPU") for k in gpu.env())


def test_vllm_on_cpu_serves_the_adapter_merged(tiny_model: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model, tmp_path / "round=1" / "adapter", seed=1)
    ref = ModelRef(base=str(tiny_model), adapter=str(adapter), served_name="policy-r1")
    server = VLLMServer(ref, port=8123, device="cpu", python="/opt/vllm/bin/python", cache_dir=tmp_path / "cache")
    command = server.command()
    merged = Path(command[command.index("--model") + 1])
    assert merged == merge_adapter(ref, tmp_path / "cache") and (merged / "config.json").is_file()
    assert command[command.index("--served-model-name") + 1] == "policy-r1" == server.model
    assert "--lora-modules" not in command and server.adapters == {}


def test_vllm_context_fits_the_model(tiny_model: Path) -> None:
    server = VLLMServer(ModelRef(base=str(tiny_model)), device="cpu")
    assert server.max_model_len == 2048  # the tiny model's max_position_embeddings, under the CPU default 4096


def test_vllm_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.model_server as model_server

    monkeypatch.delenv("WEBEVOLVER_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(model_server, "VLLM_VENV", tmp_path / "no-venv")
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is importable in this interpreter")
    assert model_server.vllm_python() is None
    server = VLLMServer(ModelRef(base="/models/smollm2"), log_dir=tmp_path)
    with pytest.raises(ServerError, match="make setup-vllm"):
        server.start()
    assert server.pid is None and not list(tmp_path.glob("*.log"))


def test_vllm_load_and_unload_adapter_requests(fake_endpoint: FakeEndpoint) -> None:
    server = VLLMServer(ModelRef(base="/models/smollm2"), device="cuda")
    server.port = int(fake_endpoint.base_url.split(":")[-1].split("/")[0])
    assert server.load_adapter("policy-r3", Path("/adapters/round-3")) == "policy-r3"
    server.load_adapter("policy-r3", "/adapters/round-3b", replace=True)
    assert server.adapters == {"policy-r3": "/adapters/round-3b"}
    server.unload_adapter("policy-r3")
    assert server.adapters == {}
    assert [(r.method, r.path, r.body) for r in fake_endpoint.requests] == [
        ("POST", "/v1/load_lora_adapter", {"lora_name": "policy-r3", "lora_path": "/adapters/round-3"}),
        ("POST", "/v1/load_lora_adapter",
         {"lora_name": "policy-r3", "lora_path": "/adapters/round-3b", "load_inplace": True}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "policy-r3"}),
    ]
    fake_endpoint.script.append((400, {"error": "adapter not found"}))
    with pytest.raises(ServerError, match="HTTP 400"):
        server.load_adapter("x", "/nope")


# -- an external OpenAI-compatible endpoint -----------------------------------------------

async def test_openai_endpoint_uses_the_key_from_env_and_never_shows_it(fake_endpoint: FakeEndpoint,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-do-not-leak-1234"
    monkeypatch.setenv("MY_LLM_KEY", secret)
    endpoint = ModelServer.for_backend("openai", ModelRef(base="gpt-4o-mini"), base_url=fake_endpoint.base_url,
                                       api_key_env="MY_LLM_KEY")
    assert isinstance(endpoint, OpenAIEndpoint)
    with endpoint as server:
        client = server.client()
        reply = await client.chat([{"role": "user", "content": "hi"}])
    assert reply.text == "Thought: ok\nAction: wait"
    health, chat = fake_endpoint.requests
    assert (health.method, health.path) == ("GET", "/v1/models")
    assert health.headers["authorization"] == chat.headers["authorization"] == f"Bearer {secret}"
    assert chat.body["model"] == "gpt-4o-mini"
    assert secret not in repr(endpoint) + repr(client) + str(vars(endpoint))

    monkeypatch.delenv("MY_LLM_KEY")
    with pytest.raises(ServerError, match="MY_LLM_KEY"):
        endpoint.start()


def test_openai_endpoint_refusing_the_key_fails_at_once(fake_endpoint: FakeEndpoint,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-wrong")
    fake_endpoint.script.append((401, {"error": "bad key"}))
    endpoint = OpenAIEndpoint(ModelRef(base="gpt-4o-mini"), base_url=fake_endpoint.base_url, api_key_env="MY_LLM_KEY")
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="HTTP 401") as info:
        endpoint.start()
    assert time.monotonic() - t0 < 5 and "sk-wrong" not in str(info.value)


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# -- the embedded default model (slow: ~1 min conversion on first use, then ~10 s start) -

@pytest.mark.slow
async def test_smollm2_converts_and_serves_offline(tmp_path: Path) -> None:
    from evolver_core.contracts.prompt import build_messages
    from evolver_core.contracts.reply import parse_reply
    from evolver_core.models.embedded import smollm2_model_dir

    t0 = time.monotonic()
    folder = smollm2_model_dir()  # under $WEBEVOLVER_HOME/models; built once
    converted_s = time.monotonic() - t0
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    ref = resolve_model("smollm2")
    assert ref.base == str(folder)
    t0 = time.monotonic()
    with ModelServer.for_backend("transformers", ref, log_dir=tmp_path) as server:
        started_s = time.monotonic() - t0
        client = server.client()
        messages = build_messages("Click the Submit button.", "Tab 0 (current): Form\n\n[1] RootWebArea 'Form'\n"
                                  "\t[2] textbox 'Name'\n\t[3] button 'Submit'", [])
        reply = await client.chat(messages, max_tokens=64)
        assert reply.completion_tokens > 0 and reply.text.strip()
        long = await client.chat([{"role": "user", "content": "Write a long story about a web browser."}],
                                 max_tokens=128, temperature=0.0)
        print(f"\nsmollm2: conversion/reuse {converted_s:.1f} s, server start {started_s:.1f} s, "
              f"policy prompt {reply.prompt_tokens} tokens -> {reply.completion_tokens} tokens in "
              f"{reply.latency_s:.1f} s, {long.completion_tokens / long.latency_s:.1f} tokens/s; "
              f"reply {reply.text!r} -> {parse_reply(reply.text)}")
