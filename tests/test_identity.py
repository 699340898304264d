"""Results belong to what produced them (issue: results you can trust): stage identities,
identity-aware cache keys, evaluations that never report another policy's episodes, broken
shards repaired on resume, and crashed pages stored as error episodes and replayed.

Real parts throughout: chromium on MiniWoB pages, the tiny model behind a real server, a real
Prefect server for the cache tests, real Parquet files on disk."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from prefect import flow

from evolver_core.agents.oracle import OracleAgent
from evolver_core.config import ModelSpec, SamplingConfig
from evolver_core.data import identity
from evolver_core.data.run_layout import open_stage, read_identity
from evolver_core.data.storage import Storage, UnreadableShard
from evolver_core.sampling.sampler import SampleConfig, SamplingError, sample_trajectories
from evolver_core.stages.judge import JudgeInputs, judge_identity
from evolver_core.stages.sample import SampleInputs, sample_identity
from evolver_core.stages.sft import ToSftInputs, to_sft_identity
from evolver_core.suites.miniwob import MiniWoBSuite
from flows.evaluate import evaluate
from flows.evolve_round import evolve_round
from fixtures_prefect import task_states
from helpers import TINY_ROUND
from tasks.sample import sample


@pytest.fixture
def code_copy(tmp_path, monkeypatch):
    """A copy of evolver_core that identities are computed from, to edit without touching the repo."""
    copy = tmp_path / "evolver_core"
    shutil.copytree(identity.CODE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(identity, "CODE_ROOT", copy)
    identity.clear_caches()
    yield copy
    identity.clear_caches()


def edit(path: Path, text: str = "\n# edited\n") -> None:
    path.write_text(path.read_text() + text)
    identity.clear_caches()


def test_code_digests_follow_what_each_stage_runs(code_copy):
    from evolver_core.stages import judge, sample as sample_stage, sft

    def digests() -> dict[str, str]:
        return {"sample": identity.code_digest(*sample_stage.CODE, exclude=sample_stage.LOOKAHEAD_CODE),
                "judge": identity.code_digest(*judge.CODE), "sft": identity.code_digest(*sft.CODE)}

    before = digests()
    (code_copy / "prompts" / "judge_system.txt").write_text("Judge harshly.\n")
    identity.clear_caches()
    after_prompt = digests()
    assert after_prompt["judge"] != before["judge"]
    assert after_prompt["sample"] == before["sample"] and after_prompt["sft"] == before["sft"]
    edit(code_copy / "training" / "sft.py")  # a domain module only the SFT conversion uses
    after_sft = digests()
    assert after_sft["sft"] != after_prompt["sft"] and after_sft["sample"] == before["sample"]
    assert after_sft["judge"] == after_prompt["judge"]
    edit(code_copy / "contracts" / "prompt.py")  # the policy prompt layout: sampling and SFT examples both depend on it
    after_policy = digests()
    assert after_policy["sample"] != before["sample"] and after_policy["sft"] != after_sft["sft"]


def test_a_stage_of_another_identity_is_moved_aside_never_mixed(tmp_path):
    store = Storage(str(tmp_path))
    first = identity.StageIdentity(stage="eval", code="c1", params={"policy": "a"})
    second = identity.StageIdentity(stage="eval", code="c1", params={"policy": "b"})
    assert open_stage(store, "r", 0, "eval", first) == "new"
    store.write_file(store.path("r", 0, "eval") + "/trajectories/part-x.parquet", b"old")
    assert open_stage(store, "r", 0, "eval", first) == "resumed"
    assert open_stage(store, "r", 0, "eval", second) == "superseded"
    assert read_identity(store, "r", 0, "eval") == second
    assert not store.fs.exists(store.path("r", 0, "eval") + "/trajectories")
    moved = list((tmp_path / "superseded" / "r" / "round=0").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(f"eval-{first.short}")


def test_upstream_identities_chain_into_downstream_ones(tmp_path, tiny_model):
    store = Storage(str(tmp_path))
    judge_spec = ModelSpec(model=str(tiny_model))
    open_stage(store, "r", 1, "sample", identity.StageIdentity(stage="sample", code="c", params={"v": 1}))
    judged, kept = JudgeInputs(str(tmp_path), "r", 1, judge_spec), ToSftInputs(str(tmp_path), "r", 1, "sample", False)
    j1, s1 = judge_identity(judged), to_sft_identity(kept)
    open_stage(store, "r", 1, "sample", identity.StageIdentity(stage="sample", code="c", params={"v": 2}))
    assert judge_identity(judged).digest != j1.digest
    assert to_sft_identity(kept).digest != s1.digest


def _lora(base: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def test_a_retrained_adapter_at_the_same_path_reruns_sampling(prefect_server, tmp_path, tiny_model):
    adapter = _lora(tiny_model, tmp_path / "adapter", seed=0)
    policy = ModelSpec(model=str(tiny_model), adapter=str(adapter))
    identities = []
    episodes = SamplingConfig(max_steps=1, miniwob_tasks="click-test").greedy_once()

    @flow
    def sample_twice_then_again() -> list:
        states = []
        for seed in (None, 1, None):
            if seed is not None:  # retrain: new weights at the same path
                _lora(tiny_model, adapter, seed=seed)
            inputs = SampleInputs(str(tmp_path / "data"), "retrain", 1, "sample", "train", 1, policy, episodes)
            identities.append(sample_identity(inputs).digest)
            states.append(sample(inputs, return_state=True))
        return [s.name for s in states]

    states = sample_twice_then_again()
    assert identities[0] != identities[1] == identities[2]
    assert states == ["Completed", "Completed", "Cached"]


def test_evaluating_a_second_policy_reports_its_own_episodes(prefect_server, tmp_path):
    oracle = evaluate(split="test", policy="oracle", tasks=4, storage=str(tmp_path),
                      sampling=SamplingConfig(max_steps=3, miniwob_tasks="click-test,focus-text"))
    tiny = evaluate(split="test", policy="tiny", tasks=4, storage=str(tmp_path),
                    sampling=SamplingConfig(max_steps=2, miniwob_tasks="click-test,focus-text"))
    assert oracle["run"] != tiny["run"] and oracle["identity"] != tiny["identity"]
    assert oracle["success_rate"] == 1.0 and tiny["episodes"] == 4
    rows = Storage(str(tmp_path)).read_table(tiny["run"], table_name="trajectories").to_pandas()
    assert len(rows) == 4 and "oracle" not in set(rows.model)
    assert (rows.identity == read_identity(Storage(str(tmp_path)), tiny["run"], 0, "eval-0").digest).all()
    again = evaluate(split="test", policy="oracle", tasks=4, storage=str(tmp_path),
                     sampling=SamplingConfig(max_steps=3, miniwob_tasks="click-test,focus-text"))
    assert again["run"] == oracle["run"] and again["success_rate"] == 1.0


async def test_a_truncated_shard_is_repaired_on_resume_and_counted_once(tmp_path):
    suite = MiniWoBSuite(["click-test", "focus-text"], seeds_per_task=2)
    await suite.start()
    tasks, store, cfg = suite.tasks("train"), Storage(str(tmp_path)), SampleConfig(run_id="t")
    await sample_trajectories(suite, tasks, lambda t, k: OracleAgent(suite), store, cfg)
    victim = Path(store.path("t", 0, "sample", "trajectories", "miniwob/focus-text/1#0"))
    victim.write_bytes(victim.read_bytes()[:40])  # a full disk, a killed copy
    with pytest.raises(UnreadableShard, match="part-miniwob_focus-text_1_0"):
        store.read_table("t", 0, "sample", table_name="trajectories")
    rows, broken = store.read_table_checked("t", 0, "sample", table_name="trajectories")
    assert rows.num_rows == 3 and broken == [store.fs.unstrip_protocol(str(victim))]
    summary = await sample_trajectories(suite, tasks, lambda t, k: OracleAgent(suite), store, cfg)
    await suite.stop()
    assert summary.repaired == [store.fs.unstrip_protocol(str(victim))]
    assert (summary.new, summary.skipped, summary.trajectories, summary.solved) == (1, 3, 4, 4)
    trajs = store.read_table("t", 0, "sample", table_name="trajectories").to_pandas()
    assert trajs.trajectory_id.is_unique and len(trajs) == 4


def _renderers() -> list[int]:
    """Chromium renderer processes that descend from this test process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                if b"--type=renderer" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
            except OSError:
                pass
    return found


class CrashingAgent(OracleAgent):
    """The oracle, except that on one task it kills the page's renderer before acting."""

    def __init__(self, suite, bad_task):
        super().__init__(suite)
        self.bad_task = bad_task

    async def act(self, task, obs, history):
        if task.id == self.bad_task:
            for pid in _renderers():
                os.kill(pid, signal.SIGKILL)
        return await super().act(task, obs, history)


async def test_a_renderer_killed_mid_episode_is_an_error_episode_replayed_on_resume(tmp_path):
    suite = MiniWoBSuite(["click-test", "focus-text"], seeds_per_task=2)
    await suite.start()
    tasks, store = suite.tasks("train"), Storage(str(tmp_path))
    cfg = SampleConfig(run_id="crash", sampling=SamplingConfig(concurrency=1))
    bad = "miniwob/click-test/1"
    with pytest.raises(SamplingError, match="1 of 4 episodes ended in an error"):
        await sample_trajectories(suite, tasks, lambda t, k: CrashingAgent(suite, bad), store, cfg)
    trajs = store.read_table("crash", 0, "sample", table_name="trajectories").to_pandas().set_index("task_id")
    assert trajs.loc[bad, "stop_reason"] == "error" and trajs.loc[bad, "error"]
    assert pd_isna(trajs.loc[bad, "gold_reward"])  # not scored as a failure
    others = trajs.drop(index=bad)
    assert (others.gold_reward == 1.0).all() and len(others) == 3  # the browser came back for the rest
    summary = await sample_trajectories(suite, tasks, lambda t, k: OracleAgent(suite), store, cfg)
    await suite.stop()
    assert (summary.new, summary.skipped, summary.solved, summary.with_gold) == (1, 3, 4, 4)
    assert summary.error_episodes == 0


def pd_isna(x) -> bool:
    import pandas as pd

    return bool(pd.isna(x))


def test_a_changed_world_model_prompt_reruns_its_stages_and_nothing_else(prefect_server, tmp_path, code_copy):
    overrides = {**TINY_ROUND, "lookahead.depths": [1]}
    tasks = ["sample-sample-r0-shard0", "to_sft-r0-sample", "finetune-r0", "wm_data-r0", "finetune_wm-r0",
             "sample-eval-r0-shard0", "sample-eval-wmla1-r0-shard0", "fidelity-r0"]
    evolve_round(run_id="ident", round=0, preset="smoke", storage=str(tmp_path), overrides=overrides)
    (code_copy / "prompts" / "world_model_system.txt").write_text("Predict the next page, briefly.\n")
    identity.clear_caches()
    state = evolve_round(run_id="ident", round=0, preset="smoke", storage=str(tmp_path), overrides=overrides,
                         return_state=True)
    state.result()
    states = task_states(state.state_details.flow_run_id, "Cached", len(tasks), timeout_s=30)
    rerun = {"wm_data-r0", "finetune_wm-r0", "sample-eval-wmla1-r0-shard0", "fidelity-r0"}
    assert {n for n, s in states.items() if s == "Completed"} == rerun
    assert {n for n, s in states.items() if s == "Cached"} == set(tasks) - rerun
