"""vLLM for real (CPU build in .venv-vllm) and the serving session that keeps servers across
stages (one per base model where adapters hot-load, one per adapter where they are merged).

- Without vLLM (CI: no `make setup-vllm`), the vLLM tests skip with the reason; the session's
  reuse logic is still tested on real `transformers serve` processes of the tiny model and on
  a scripted endpoint standing in for vLLM's adapter API.
- With it, a default-suite test starts real vLLM servers on the tiny model (CPU: each adapter
  merged, a server per adapter, reused across "stages", the idle one stopped to make room);
  a `slow` test samples MiniWoB episodes through `webevolver sample --model-backend vllm`
  with SmolLM2 and an adapter.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evolver_core.config import ModelSpec
from evolver_core.models.refs import ModelRef
from fixtures_models import FakeEndpoint, chat_response, gone, make_adapter
from evolver_core.world_model.delta import ENDS
from evolver_core.world_model.model import OUTCOME_TOP_LOGPROBS, outcome_probability
from infra.model_server import VLLMServer, vllm_python
from infra.serving import Lease, adapter_name, current_session, serve, serving_session

REPO = Path(__file__).resolve().parents[1]


def gone_soon(pid: int, within_s: float = 10.0) -> bool:
    """`gone(pid)`, allowing a killed process a moment to be scheduled and die on a busy machine."""
    import time

    deadline = time.monotonic() + within_s
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
needs_vllm = pytest.mark.skipif(vllm_python() is None,
                                reason="vLLM is not installed: `make setup-vllm` creates .venv-vllm (CI has none)")


def greedy_with_adapter(base: Path, adapter: Path, messages: list[dict], max_tokens: int) -> str:
    """What the base model with the adapter says at temperature 0, in process (PEFT, unmerged)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


# -- the session's logic, without vLLM ---------------------------------------------------

def test_adapter_name_follows_the_contents(tmp_path: Path) -> None:
    folder = tmp_path / "round=1" / "finetune_wm" / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"one")
    first = adapter_name(folder)
    assert first.startswith("finetune_wm-adapter-") and len(first.rsplit("-", 1)[1]) == 12
    assert adapter_name(folder) == first
    (folder / "adapter_model.safetensors").write_bytes(b"two")  # retrained in place
    assert adapter_name(folder) != first


def test_auto_backend_is_the_fastest_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.serving as serving

    monkeypatch.setattr(serving, "vllm_python", lambda: None)
    assert serving.resolve_backend("auto") == "transformers-cb"
    monkeypatch.setattr(serving, "vllm_python", lambda: "/opt/vllm/bin/python")
    assert serving.resolve_backend("auto") == "vllm"
    assert serving.resolve_backend("transformers") == "transformers"
    assert isinstance(serve(ModelSpec(model="/models/x", backend="auto")), VLLMServer)


def test_outside_a_session_serve_starts_a_server_per_call(tiny_model: Path) -> None:
    assert current_session() is None
    first, second = serve(ModelSpec(model=str(tiny_model))), serve(ModelSpec(model=str(tiny_model)))
    assert first is not second and not isinstance(first, Lease)
    assert serve(ModelSpec(model=str(tiny_model)), threads=2).threads == 2  # type: ignore[attr-defined]


def test_session_shares_one_server_per_base_model_across_stages(tiny_model: Path, tmp_path: Path,
                                                                  server_logs: Path) -> None:
    """Real `transformers serve` processes, made shareable for the test: two stages on one
    base get one server; another base gets its own; an adapter (transformers cannot load one
    at run time) gets a server of its own with the adapter merged; everything stops with the
    session."""
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    adapter = make_adapter(tiny_model, tmp_path / "round=1" / "adapter", seed=1)
    spec, spec_other = ModelSpec(model=str(tiny_model)), ModelSpec(model=str(other))
    key = ("transformers", str(tiny_model), None)
    with serving_session(shared_backends=("transformers",), log_dir=server_logs) as session:
        with serving_session() as inner:  # nested: the same session
            assert inner is session and current_session() is session
        with serve(spec) as stage1:  # stage 1 starts it
            assert isinstance(stage1, Lease)
            url, model = stage1.base_url, stage1.model
            reply = asyncio.run(stage1.client().chat([{"role": "user", "content": "[1] button 'OK'"}], max_tokens=4))
            assert reply.completion_tokens > 0
        assert session.leases()[key] == 0
        pid = session._servers[key].server.pid
        with serve(spec) as stage2a, serve(spec) as stage2b:  # stage 2: two roles, the same server
            assert stage2a.base_url == stage2b.base_url == url and stage2a.model == model
            assert session.leases()[key] == 2
            with serve(spec_other) as other_stage:
                other_url = other_stage.base_url
                assert other_url != url
        with serve(ModelSpec(model=str(tiny_model), adapter=str(adapter))) as tuned:
            assert tuned.base_url not in (url, other_url)
            assert session.leases()[("transformers", str(tiny_model), adapter_name(adapter))] == 1
        starts = session.start_times()
        assert [(s["backend"], s["model"], s["adapter"], s["shared"]) for s in starts] == [
            ("transformers", str(tiny_model), None, True), ("transformers", str(other), None, True),
            ("transformers", str(tiny_model), str(adapter), True)]
        assert all(s["start_s"] > 0 for s in starts)
        assert session.summary()["start_s_total"] == pytest.approx(sum(s["start_s"] for s in starts), abs=0.02)
    assert current_session() is None
    assert pid is not None and gone_soon(pid)  # the session stopped it


def test_session_records_per_stage_servers_too(tiny_model: Path, server_logs: Path) -> None:
    """The transformers backend keeps a server per stage inside a session; its starts are recorded."""
    with serving_session() as session:
        with serve(ModelSpec(model=str(tiny_model))) as server:
            assert not isinstance(server, Lease)
            pid = server.pid
        assert gone_soon(pid)  # stopped at the end of its stage, as always
        assert [(s["backend"], s["shared"]) for s in session.start_times()] == [("transformers", False)]
    assert session.start_times()[0]["start_s"] > 0


class FakeVLLM(VLLMServer):
    """A VLLMServer whose process is a scripted endpoint (vLLM's adapter API, recorded);
    `device` "cuda" hot-loads adapters, "cpu" serves one merged model."""

    starts = 0

    def __init__(self, ref: ModelRef, endpoint: FakeEndpoint, device: str = "cuda", **opts: object):
        super().__init__(ref, device=device, **opts)  # type: ignore[arg-type]
        self.endpoint = endpoint
        self.process = None

    def start(self) -> FakeVLLM:
        if self.process is None:
            FakeVLLM.starts += 1
            self.port = int(self.endpoint.base_url.split(":")[-1].split("/")[0])
            self.process = object()  # type: ignore[assignment]
            self.start_s = 0.01
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.process = None

    def failure(self) -> str | None:
        return None


def _adapters(tmp_path: Path) -> tuple[Path, Path]:
    policy, world_model = tmp_path / "finetune" / "adapter", tmp_path / "finetune_wm" / "adapter"
    for folder, payload in ((policy, b"p"), (world_model, b"w")):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(payload)
    return policy, world_model


def test_session_loads_each_adapter_once_by_content(tiny_model: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that hot-loads adapters (vLLM on GPUs): one per base model, each adapter loaded once."""
    import infra.serving as serving

    endpoint = FakeEndpoint(default=(200, chat_response()))
    monkeypatch.setattr(serving, "_server", lambda spec, ref, **opts: FakeVLLM(ref, endpoint))
    FakeVLLM.starts = 0
    policy, world_model = _adapters(tmp_path)
    try:
        with serving_session() as session:
            for _stage in range(2):  # the same adapters in two stages: loaded once
                with serve(ModelSpec(model=str(tiny_model), backend="vllm", adapter=str(policy))) as p, \
                        serve(ModelSpec(model=str(tiny_model), backend="vllm", adapter=str(world_model))) as w, \
                        serve(ModelSpec(model=str(tiny_model), backend="vllm")) as judge:
                    assert p.model == adapter_name(policy) and w.model == adapter_name(world_model)
                    assert judge.model == tiny_model.name and p.base_url == w.base_url == judge.base_url
                    assert p.client().model == p.model and p.client().concurrency == VLLMServer.concurrency
            (policy / "adapter_model.safetensors").write_bytes(b"p2")  # the next round retrains it in place
            with serve(ModelSpec(model=str(tiny_model), backend="vllm", adapter=str(policy))) as p2:
                assert p2.model == adapter_name(policy) != p.model
            loads = [r.body for r in endpoint.requests if r.path == "/v1/load_lora_adapter"]
            assert [b["lora_name"] for b in loads] == [p.model, w.model, p2.model]
            assert all(b["lora_path"] in (str(policy), str(world_model)) for b in loads)
            assert FakeVLLM.starts == 1 and len(session.adapter_loads()) == 3
    finally:
        endpoint.close()


def test_session_on_cpu_runs_a_server_per_adapter_and_makes_room(tiny_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM on CPU serves merged models: a server per (base, adapter contents), reused across
    stages; past `max_servers`, starting one stops the least recently used server no stage holds."""
    import infra.serving as serving

    endpoint = FakeEndpoint(default=(200, chat_response()))
    made: list[FakeVLLM] = []

    def fake(spec: ModelSpec, ref: ModelRef, **opts: object) -> FakeVLLM:
        made.append(FakeVLLM(ref, endpoint, device="cpu"))
        return made[-1]

    monkeypatch.setattr(serving, "_server", fake)
    FakeVLLM.starts = 0
    policy, world_model = _adapters(tmp_path)
    vllm = lambda adapter=None: ModelSpec(model=str(tiny_model), backend="vllm",  # noqa: E731
                                          adapter=str(adapter) if adapter else None)
    try:
        with serving_session(max_servers=2) as session:
            with serve(vllm(policy)) as p, serve(vllm(world_model)) as w:
                assert p.model == adapter_name(policy) and w.model == adapter_name(world_model)
                assert p.shared is not w.shared and p.shared.ref.adapter == str(policy)
                first_policy_server, wm_server, first_name = p.shared, w.shared, p.model
            with serve(vllm(world_model)) as w2:  # the next stage: the same server, no start
                assert w2.shared is wm_server
            assert FakeVLLM.starts == 2
            with serve(vllm()) as judge:  # a third model: the idle policy server (least recent) makes room
                assert judge.model == tiny_model.name
                assert first_policy_server.process is None and wm_server.process is not None
            (policy / "adapter_model.safetensors").write_bytes(b"p2")  # retrained in place: a new server
            with serve(vllm(policy)) as p2:
                assert p2.model == adapter_name(policy) != first_name and p2.shared is not first_policy_server
            assert FakeVLLM.starts == 4 and session.adapter_loads() == []
            assert not [r for r in endpoint.requests if r.path == "/v1/load_lora_adapter"]
    finally:
        endpoint.close()


# -- the real vLLM server (when installed) -----------------------------------------------

@needs_vllm
def test_vllm_on_cpu_serves_merged_adapters_across_stages(tiny_model: Path, tmp_path: Path,
                                                          server_logs: Path) -> None:
    """Real vLLM (CPU build): each adapter is served merged by a server of its own, reused by
    a later stage, and the least recently used idle server is stopped to make room."""
    messages = [{"role": "user", "content": "OBSERVATION:\n[1] button 'Submit'\nOBJECTIVE: Click Submit."}]
    adapter_a = make_adapter(tiny_model, tmp_path / "round=1" / "adapter", seed=1)
    adapter_b = make_adapter(tiny_model, tmp_path / "round=2" / "adapter", seed=2)
    want_a = greedy_with_adapter(tiny_model, adapter_a, messages, 8)
    want_b = greedy_with_adapter(tiny_model, adapter_b, messages, 8)
    assert want_a != want_b

    async def ask(server, **kw):
        return await server.client().chat(messages, **{"max_tokens": 8} | kw)

    with serving_session(log_dir=server_logs, max_servers=2) as session:
        with serve(ModelSpec(model=str(tiny_model), backend="vllm", adapter=str(adapter_a))) as stage1:
            assert isinstance(stage1.shared, VLLMServer) and not stage1.shared.hot_loads_adapters
            pid_a = stage1.shared.pid
            assert asyncio.run(ask(stage1)).text == want_a  # the adapter's weights, merged, at temperature 0
        with serve(ModelSpec(model=str(tiny_model), backend="vllm", adapter=str(adapter_a))) as again:
            assert again.shared.pid == pid_a  # a later stage: no restart
        with serve(ModelSpec(model=str(tiny_model), backend="vllm", adapter=str(adapter_b))) as policy, \
                serve(ModelSpec(model=str(tiny_model), backend="vllm")) as judge:
            assert policy.base_url != judge.base_url
            assert gone_soon(pid_a)  # two servers at most: the idle one of adapter a made room
            assert asyncio.run(ask(policy)).text == want_b
            several = asyncio.run(ask(judge, n=2, temperature=1.0, seed=3))
            assert len(several.texts) == 2  # vLLM honours n
            ends = asyncio.run(ask(judge, regex=f"{ENDS}: (success|failure)", top_logprobs=OUTCOME_TOP_LOGPROBS,
                                   max_tokens=32))
            assert "".join(t.token for t in ends.token_logprobs).startswith(ends.text)  # its tokens (and EOS)
            p_success = outcome_probability(ends.token_logprobs)  # the look-ahead scorer's reading
            assert p_success is not None and 0.0 <= p_success <= 1.0
            assert (p_success > 0.5) == ends.text.endswith("success")  # greedy within the grammar: the likelier word
            pids = [policy.shared.pid, judge.shared.pid]
        starts = session.start_times()
        assert [(s["backend"], s["adapter"], s["shared"]) for s in starts] == [
            ("vllm", str(adapter_a), True), ("vllm", str(adapter_b), True), ("vllm", None, True)]
        assert session.adapter_loads() == []
        print(f"\nvLLM (CPU) on the tiny model: starts {[s['start_s'] for s in starts]} s")
    assert all(gone_soon(pid) for pid in pids)


@pytest.mark.slow
@needs_vllm
def test_sample_miniwob_episodes_through_vllm(tmp_path: Path) -> None:
    """`webevolver sample --model-backend vllm` end to end: SmolLM2 with a LoRA adapter (the
    round's policy layout), real MiniWoB pages in chromium, trajectories in Parquet."""
    import pyarrow.parquet as pq

    from evolver_core.training.finetune import LORA_TARGETS
    from evolver_core.models.refs import resolve_model

    adapter = make_adapter(resolve_model("smollm2").base, tmp_path / "policy", seed=0, targets=LORA_TARGETS)
    env = os.environ | {"WEBEVOLVER_HOME": os.environ.get("WEBEVOLVER_HOME", str(Path.home() / ".cache/webevolver"))}
    command = [str(Path(sys.executable).parent / "webevolver"), "sample", "--suite", "miniwob", "--policy", "model",
               "--model", str(adapter), "--model-backend", "vllm", "--judge", "none", "--tasks", "3",
               "--miniwob-tasks", "click-button,enter-text,login-user", "--max-steps", "2", "--run", "vllm-sample",
               "--storage", str(tmp_path / "store"), "--json"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trajectories"] == 3
    tables = [pq.read_table(path) for path in (tmp_path / "store").rglob("*.parquet")]
    models = {m for t in tables if "model" in t.column_names and "step" in t.column_names
              for m in t.column("model").to_pylist() if m}
    assert models == {"policy"}, models  # every step was generated by the adapter, served by name


@pytest.mark.slow
@needs_vllm
def test_an_evolve_round_on_the_vllm_backend_shares_its_servers(prefect_server, tmp_path: Path) -> None:
    from flows.evolve_round import evolve_round

    summary = evolve_round(run_id="vllm", round=0, preset="smoke", storage=str(tmp_path),
                           overrides={"backend": "vllm", "training.max_steps": 2, "test_tasks": 2,
                                      "lookahead.depths": [1], "request_timeout_s": 600, "step_deadline_s": 900})
    assert summary.eval_tasks == 2 and summary.success_rate is not None
    assert summary.success_rate_lookahead["1"] is not None and summary.fidelity.sim is not None
    shared = [s for s in summary.server_starts if s["shared"]]
    # wm_data's distiller, look-ahead's scorer and fidelity share the base model's server; on CPU
    # the policy and the world model each have one (merged); no model is started twice
    assert {s["backend"] for s in shared} == {"vllm"} and len(shared) == len(summary.server_starts)
    models = [(s["model"], s["adapter"]) for s in shared]
    assert len(models) == len(set(models)) == 3, models
