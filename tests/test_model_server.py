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

from evolver_core.models import ModelRef, folder_digest, merge_adapter, resolve_model, tiny_model_dir
from fixtures_models import (  # noqa: F401  (fixtures)
    FakeEndpoint, fake_endpoint, gone,
)
from infra.model_server import (
    ModelServer, OpenAIEndpoint, ProcessServer, ServerError, TransformersServer, VLLMServer, free_port,
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


# -- vLLM: command line and adapter requests (vLLM itself is GPU-only, not installed) ----

def test_vllm_command_line_and_env(tmp_path: Path) -> None:
    ref = ModelRef(base="/models/smollm2", adapter="/adapters/round-2", served_name="policy-r2")
    server = VLLMServer(ref, port=8123, extra_args=("--dtype", "float32"), log_dir=tmp_path)
    assert server.command() == [
        "vllm", "serve", "/models/smollm2", "--host", "127.0.0.1", "--port", "8123",
        "--served-model-name", "smollm2", "--enable-lora", "--max-lora-rank", "64",
        "--lora-modules", "policy-r2=/adapters/round-2", "--dtype", "float32"]
    assert server.model == "policy-r2"  # requests name the adapter
    assert server.env()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert server.env()["HF_HUB_OFFLINE"] == "1"
    plain = VLLMServer(ModelRef(base="/models/smollm2", served_name="smollm2"), port=8123)
    assert "--lora-modules" not in plain.command() and "--enable-lora" in plain.command()
    assert plain.model == "smollm2"


def test_vllm_load_and_unload_adapter_requests(fake_endpoint: FakeEndpoint) -> None:
    server = VLLMServer(ModelRef(base="/models/smollm2"))
    server.port = int(fake_endpoint.base_url.split(":")[-1].split("/")[0])
    assert server.load_adapter("policy-r3", Path("/adapters/round-3")) == "policy-r3"
    server.load_adapter("policy-r3", "/adapters/round-3b", replace=True)
    server.unload_adapter("policy-r3")
    assert [(r.method, r.path, r.body) for r in fake_endpoint.requests] == [
        ("POST", "/v1/load_lora_adapter", {"lora_name": "policy-r3", "lora_path": "/adapters/round-3"}),
        ("POST", "/v1/load_lora_adapter",
         {"lora_name": "policy-r3", "lora_path": "/adapters/round-3b", "load_inplace": True}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "policy-r3"}),
    ]
    fake_endpoint.script.append((400, {"error": "adapter not found"}))
    with pytest.raises(ServerError, match="HTTP 400"):
        server.load_adapter("x", "/nope")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (GPU-only)")
async def test_vllm_serves_and_hot_loads_an_adapter(tiny_model: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(adapter)
    ref = ModelRef(base=str(tiny_model), adapter=str(adapter), served_name="r1")
    with VLLMServer(ref, log_dir=tmp_path, startup_timeout_s=600) as server:
        reply = await server.client().chat([{"role": "user", "content": "hi"}], max_tokens=8)
        assert reply.completion_tokens > 0
        name = server.load_adapter("r2", adapter)
        reply = await server.client(model=name).chat([{"role": "user", "content": "hi"}], max_tokens=8, n=2,
                                                     temperature=1.0)
        assert len(reply.texts) == 2


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
    from evolver_core.models import smollm2_model_dir
    from evolver_core.policy import build_messages, parse_reply

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
