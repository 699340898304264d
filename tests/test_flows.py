"""The evolution flows on a real Prefect server: a smoke round, cache hits on rerun, resume
after a kill during sampling, sampling shards on a Dask cluster, and the evaluate flow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import astuple, replace
from pathlib import Path

import pytest
from prefect import flow

from evolver_core.config import SamplingConfig
from evolver_core.data.stage_results import SampleSummary
from evolver_core.data.stage_work import read_usage
from evolver_core.data.storage import Storage
from evolver_core.data.run_layout import SELF_IMPROVE, WEBEVOLVER, adapter_uri, read_identity
from evolver_core.models.embedded import tiny_model_dir
from evolver_core.models.folders import weights_size
from evolver_core.reporting.cost import FAR, MachineLimits, RoundCost, round_cost
from evolver_core.reporting.summary import ArmTraining, RoundSummary, SplitSeeds
from evolver_core.settings import download_cache
from evolver_core.training.sft import examples_digest, read_sft_parquet
from evolver_core.stages.sample import SampleInputs
from flows.evaluate import evaluate
from flows.evolve_round import evolve_round
from flows.runners import make_runner
from fixtures_prefect import task_states
from helpers import TINY_ROUND
from tasks.sample import sample

ROUND_ZERO_TASKS = ["sample-sample-r0-shard0", "to_sft-r0-sample", "finetune-r0", "wm_data-r0", "finetune_wm-r0",
                    "sample-eval-r0-shard0", "sample-eval-wmla1-r0-shard0", "sample-eval-wmla2-r0-shard0",
                    "fidelity-r0"]
# A round's summary as `evolve --json` prints it: its keys, in order.
SUMMARY_KEYS = ["run", "round", "preset", "suite", "splits", "storage", "real_trajectories", "synthetic",
                "arms_identical", "real_episodes", "training", "train_success_rate", "judge_agreement",
                "sft_examples", "kept_trajectories", "adapter",
                "adapter_digest", "train_loss", "success_rate", "success_ci", "eval_tasks", "eval_errors",
                "action_validity", "success_rate_self_improve", "success_ci_self_improve", "success_rate_lookahead",
                "success_rate_plain_on_lookahead_tasks", "lookahead", "paired", "generalization_success_rate",
                "generalization_ci", "fidelity", "world_model", "stage_seconds", "identities", "warnings",
                "server_starts", "cost"]
# `webevolver bench round`'s JSON: the round, its storage, then `reporting.cost.RoundCost`.
BENCH_ROUND_KEYS = {"bench", "run", "round", "storage", "limits", "params", "weight_bytes", "stages", "far_from_limit"}
STAGE_COST_KEYS = {"seconds", "prompt_tokens", "generated_tokens", "trained_tokens", "flops_ratio", "bandwidth_ratio",
                   "ratio", "note"}


def test_smoke_round_zero_then_rerun_is_all_cache_hits(prefect_server, tmp_path):
    """In the paper's tree form: its first pages give fidelity transitions the random tiny policy
    (no valid action) cannot (the delta form runs in the evolve test below)."""
    overrides = {**TINY_ROUND, "world_model.form": "tree"}
    first = evolve_round(run_id="smoke", round=0, preset="smoke", storage=str(tmp_path), overrides=overrides,
                         return_state=True)
    summary = first.result()
    assert summary.real_trajectories == 4 and summary.kept_trajectories == 4 and summary.sft_examples > 4
    assert summary.eval_tasks == 2 and summary.success_rate is not None
    store = Storage(str(tmp_path))
    assert store.fs.exists(store.fs._strip_protocol(summary.adapter) + "/adapter_config.json")
    assert len(store.list_shards("smoke", 0, "eval", "trajectories")) == 2
    wm = summary.world_model
    steps = store.read_table("smoke", 0, "sample", table_name="steps").num_rows
    demos = store.read_table("smoke", 0, "sample", table_name="trajectories").to_pandas()
    # MiniWoB ends each demonstration itself (no `stop`): its first page, then one transition per action,
    # the last one to the page kept as the trajectory's final observation, which ends the episode
    assert (demos.stop_reason == "done").all() and demos.final_observation.notna().all()
    assert wm.form == "tree"
    assert wm.transitions == steps + len(demos) and 0 < wm.kept <= wm.transitions
    stored = store.read_table("smoke", 0, "wm_data", table_name="wm_transitions").to_pandas()
    assert stored.ends.any() and stored.success[stored.ends].all()  # the demonstrations' ends, all solved
    assert wm.examples == wm.kept
    assert store.read_table("smoke", 0, "wm_data", table_name="wm_transitions").num_rows == wm.kept
    assert store.fs.exists(store.fs._strip_protocol(wm.adapter) + "/adapter_config.json")
    assert set(summary.success_rate_lookahead) == {"1", "2"}
    assert all(v is not None for v in summary.success_rate_lookahead.values())
    for d in (1, 2):  # every step of a look-ahead evaluation records its candidates
        steps = store.read_table("smoke", 0, f"eval-wmla{d}", table_name="steps").to_pandas()
        assert len(steps) > 0 and all('"lookahead"' in s and f'"depth":{d}' in s for s in steps.sampling)
    fid = store.read_table("smoke", 0, "fidelity", table_name="wm_fidelity").to_pandas()
    fidelity = summary.fidelity
    assert fidelity.transitions == len(fid) > 0 and set(fid.trajectory_id) <= set(
        store.read_table("smoke", 0, "eval", table_name="trajectories").column("trajectory_id").to_pylist())
    assert fidelity.str == fid["str"].mean() and fidelity.sim == pytest.approx(fid["sim"].mean())
    assert fidelity.oa is not None and fidelity.exact == fid["exact"].mean()
    assert set(fidelity.copy) >= {"str", "sim", "exact"}  # the baseline on the same transitions
    assert summary.synthetic.tried == 0  # round 0 has no policy queries to synthesize for
    assert summary.arms_identical is None and summary.paired.webevolver_vs_self is None
    assert summary.real_episodes == {"webevolver": len(demos)}  # the demonstrations, played on the real pages
    assert summary.training == {"webevolver": ArmTraining(summary.sft_examples, round(2 * 2 / summary.sft_examples, 3),
                                                          summary.training["webevolver"].data_digest)}
    # The seeds of MiniWoB's splits: validation apart from both, touched by no round yet.
    evaluated = store.read_table("smoke", 0, "eval", table_name="trajectories").to_pandas()
    assert summary.splits == {"train": SplitSeeds(0, (demos.seed.min(), demos.seed.max())),
                              "validation": SplitSeeds(50_000, None),
                              "test": SplitSeeds(100_000, (evaluated.seed.min(), evaluated.seed.max()))}
    assert list(summary.to_json()) == SUMMARY_KEYS  # what `evolve --json` prints of a round
    states = task_states(first.state_details.flow_run_id, "Completed", len(ROUND_ZERO_TASKS))
    assert sorted(states) == sorted(ROUND_ZERO_TASKS)
    check_cost(store, summary)

    # After `make run`: the stored round's report, without rerunning it, in another process.
    out = subprocess.run([sys.executable, "-m", "cli.main", "bench", "round", "--run", "smoke", "--storage",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) == BENCH_ROUND_KEYS and (report["run"], report["round"]) == ("smoke", 0)
    assert report["stages"].keys() == summary.cost.stages.keys()  # (emit_json sorts the keys)
    assert all(set(stage) == STAGE_COST_KEYS for stage in report["stages"].values())
    assert report["stages"]["finetune"]["trained_tokens"] == summary.cost.stages["finetune"].trained_tokens

    again = evolve_round(run_id="smoke", round=0, preset="smoke", storage=str(tmp_path), overrides=overrides,
                         return_state=True)
    rerun = again.result()
    assert rerun.stage_seconds.keys() == summary.stage_seconds.keys()
    assert rerun.server_starts == [] and summary.server_starts  # cache hits start no server
    unmeasured = {"stage_seconds": {}, "server_starts": [], "cost": None}  # the limits are measured again
    assert replace(rerun, **unmeasured) == replace(summary, **unmeasured)
    # the cost keeps the seconds of the run that did the work, not the cache hits'
    assert work(rerun.cost) == work(summary.cost)
    states = task_states(again.state_details.flow_run_id, "Cached", len(ROUND_ZERO_TASKS))
    assert set(states.values()) == {"Cached"} and sorted(states) == sorted(ROUND_ZERO_TASKS)

    # More browser contexts: the sampling stages run again (their inputs changed) but resume every
    # stored episode, and what only follows them (world-model data, training) stays cached.
    wider = evolve_round(run_id="smoke", round=0, preset="smoke", storage=str(tmp_path),
                         overrides={**overrides, "concurrency": 3}, return_state=True)
    assert wider.result().success_rate == summary.success_rate
    states = task_states(wider.state_details.flow_run_id, {"Cached", "Completed"}, len(ROUND_ZERO_TASKS))
    assert {k: v for k, v in states.items() if v == "Cached"}.keys() == {
        "to_sft-r0-sample", "wm_data-r0", "finetune_wm-r0", "finetune-r0", "fidelity-r0"}
    assert work(wider.result().cost) == work(summary.cost)  # resuming every episode is not the work


def work(cost: RoundCost) -> dict:
    """What each stage of a round did and how long it took (the limits aside)."""
    return {stage: (c.seconds, c.prompt_tokens, c.generated_tokens, c.trained_tokens)
            for stage, c in cost.stages.items()}


def check_cost(store: Storage, summary: RoundSummary) -> None:
    """The round's cost report (`reporting.cost`) against its stored rows and the recorded seconds."""
    cost = summary.cost
    assert cost.limits.flops_per_s > 0 and cost.limits.bytes_per_s > 0 and cost.limits.threads >= 1
    # every stage that ran, keyed by its folder (`to_sft` writes `sft`), with the seconds the flow measured
    assert list(cost.stages) == ["sample", "sft", "wm_data", "finetune_wm", "finetune", "eval", "eval-wmla1",
                                 "eval-wmla2", "fidelity"]
    for stage, c in cost.stages.items():
        assert c.seconds == summary.stage_seconds["to_sft" if stage == "sft" else stage]
    for stage in ("sample", "sft"):  # the scripted demonstrations and rejection sampling call no model
        assert cost.stages[stage].note == "no model work" and cost.stages[stage].ratio is None
    per_step = {}
    for stage in ("eval", "eval-wmla1", "eval-wmla2"):  # every call's tokens are in the step rows
        steps = store.read_table("smoke", 0, stage, table_name="steps").to_pandas()
        c = cost.stages[stage]
        stored = (steps.prompt_tokens.sum(), steps.completion_tokens.sum())
        assert (c.prompt_tokens, c.generated_tokens) == stored and min(stored) > 0
        assert c.ratio == pytest.approx(c.flops_ratio + c.bandwidth_ratio)
        per_step[stage] = c.prompt_tokens / len(steps)
    # look-ahead sums its candidates' and world model's calls into each step
    assert per_step["eval-wmla1"] > per_step["eval"]
    for stage in ("wm_data", "fidelity"):  # rationales; M_w's predictions and the O/A judge: counted by the clients
        c = cost.stages[stage]
        assert (c.prompt_tokens, c.generated_tokens) == astuple(read_usage(store, "smoke", 0, stage))[:2]
        assert c.prompt_tokens > 0 and c.generated_tokens > 0
    size = weights_size(tiny_model_dir())
    assert (cost.params, cost.weight_bytes) == (size.params, size.bytes)
    for stage in ("finetune", "finetune_wm"):  # TRL's count, stored with the adapter's metrics
        c = cost.stages[stage]
        metrics = json.loads(Path(store.fs._strip_protocol(store.uri("smoke", 0, stage)) + "/adapter/finetune.json")
                             .read_text())["metrics"]
        assert c.trained_tokens == metrics["trained_tokens"] > 0 and c.bandwidth_ratio is None
        assert c.flops_ratio == pytest.approx(4 * size.params * c.trained_tokens / c.seconds / cost.limits.flops_per_s)
    # the same report from the stored rows alone, against other limits
    limits = MachineLimits(flops_per_s=1e9, bytes_per_s=1e9, threads=1)
    again = round_cost(store, "smoke", 0, limits, size.params, size.bytes)
    assert work(again) == work(cost)
    assert [line.split(" ")[0] for line in again.far_from_limit] == [
        s for s, c in again.stages.items() if c.ratio is not None and c.ratio < FAR]


def test_killed_during_sampling_resumes_without_loss_or_duplicates(prefect_server, tmp_path):
    overrides = {**TINY_ROUND, "demo_tasks": 24, "concurrency": 1}
    code = ("from flows.evolve_round import evolve_round; "
            f"evolve_round(run_id='kill', round=0, preset='smoke', storage={str(tmp_path)!r}, overrides={overrides!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Storage(str(tmp_path))
    deadline = time.monotonic() + 240
    while len(store.list_shards("kill", 0, "sample", "trajectories")) < 4:
        assert proc.poll() is None, "the flow ended before it could be killed"
        assert time.monotonic() < deadline, "sampling did not start"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p: store.fs.info(store.fs._strip_protocol(p))["mtime"]
              for p in store.list_shards("kill", 0, "sample", "trajectories")}
    assert 4 <= len(before) < 24

    summary = evolve_round(run_id="kill", round=0, preset="smoke", storage=str(tmp_path), overrides=overrides)
    trajs = store.read_table("kill", 0, "sample", table_name="trajectories").to_pandas()
    assert len(trajs) == 24 and trajs.trajectory_id.is_unique and summary.real_trajectories == 24
    after = {p: store.fs.info(store.fs._strip_protocol(p))["mtime"] for p in before}
    assert after == before, "finished trajectories were sampled again"
    steps = store.read_table("kill", 0, "sample", table_name="steps").to_pandas()
    assert set(steps.trajectory_id) == set(trajs.trajectory_id)
    assert not steps.duplicated(["trajectory_id", "step"]).any()


def test_sampling_shards_run_on_a_local_dask_cluster(prefect_server, tmp_path):
    @flow(task_runner=make_runner("dask"))
    def sharded() -> list[SampleSummary]:
        episodes = SamplingConfig(max_steps=5, miniwob_tasks="click-test,focus-text", shards=2)
        futures = [sample.submit(SampleInputs(str(tmp_path), "dask", 0, "sample", "train", 6, None, episodes, shard=i))
                   for i in range(2)]
        return [f.result() for f in futures]

    shards = sharded()
    assert [s.new for s in shards] == [3, 3]
    trajs = Storage(str(tmp_path)).read_table("dask", 0, "sample", table_name="trajectories").to_pandas()
    assert len(trajs) == 6 and trajs.trajectory_id.is_unique and (trajs.gold_reward == 1.0).all()


def test_evaluate_flow_reports_success_with_a_confidence_interval(prefect_server, tmp_path):
    result = evaluate(sampling=SamplingConfig(suite="sandbox"), split="test", policy="oracle", tasks=5, repeats=2,
                      run_id="ev", storage=str(tmp_path))
    assert result["tasks"] == 5 and result["episodes"] == 10 and result["success_rate"] == 1.0
    assert 0.6 < result["ci_low"] < 1.0 and result["ci_high"] == 1.0


def test_evolve_flow_reports_rounds_and_writes_the_success_plot(prefect_server, tmp_path):
    """Rounds 0-2: from round 2 each policy arm samples with its own previous policy."""
    from flows.evolve import evolve

    result = evolve(rounds=2, preset="smoke", run_id="evo", storage=str(tmp_path),
                    overrides={**TINY_ROUND, "lookahead.depths": [1], "demo_explore": 1})
    assert [r.round for r in result["rounds"]] == [0, 1, 2]
    zero = result["rounds"][0]  # each demonstration task explored once: the policy trains on neither exploration
    assert zero.real_trajectories == 8 and zero.kept_trajectories == 4
    one = result["rounds"][1]
    # The tiny policy fails its train queries, so the world model synthesizes for them.
    store = Storage(str(tmp_path))
    synthetic = store.read_table("evo", 1, "synthesize", table_name="trajectories").to_pandas()
    syn = one.synthetic
    assert syn.failed_queries == 2 and syn.tried == len(synthetic) == 2 and syn.filter == "replay"
    assert syn.terminal == (synthetic.stop_reason == "done").sum()
    # The random tiny policy keeps nothing: the round says so, and that the arms trained alike.
    assert syn.kept == 0 and one.arms_identical is True
    assert any("synthetic trajectories was kept" in w for w in one.warnings)
    assert "the WebEvolver and self-improve arms trained on the same data" in one.warnings
    pair = one.paired.webevolver_vs_self
    assert pair.episodes == one.eval_tasks and pair.difference == pytest.approx(
        one.success_rate - one.success_rate_self_improve)
    assert set(one.paired.wmla_vs_plain) == {"1"} and one.lookahead["1"].steps > 0
    assert (synthetic.source == "synthetic").all() and set(synthetic.task_id) <= set(
        store.read_table("evo", 1, "sample", table_name="trajectories").column("task_id").to_pylist())
    assert one.real_trajectories == 4 and set(one.success_rate_lookahead) == {"1"}
    # The delta form (the smoke default) predicts what an action changes; the random tiny policy's
    # evaluation has no valid action, so nothing is held out to score, and the round says so.
    assert one.world_model.form == "delta" and {"str", "sim", "exact"} <= set(one.fidelity.copy)
    assert one.fidelity.transitions > 0 or "fidelity scored no held-out transition" in one.warnings
    svg = Path(result["plot"].removeprefix("file://")).read_text()
    assert "<svg" in svg and "round 0" in svg and "self-improve policy" in svg and "look-ahead, depth 1" in svg
    assert "n=" in svg and Path(result["plot"].removeprefix("file://")).with_suffix(".png").exists()
    assert one.success_rate_self_improve is not None and one.success_ci is not None

    # Round 1 shares round 0's demonstrations and its own sample; the WebEvolver arm also replayed
    # its synthetic trajectories on the real pages, which the round counts and names.
    def rows(round_: int, stage: str):
        return store.read_table("evo", round_, stage, table_name="trajectories").to_pandas()

    def replayed(round_: int) -> int:
        return int(rows(round_, "synthesize").gold_reward.notna().sum())

    assert not store.exists("evo", 1, "sample-self")
    shared = len(rows(0, "sample")) + len(rows(1, "sample"))
    assert one.real_episodes == {"webevolver": shared + replayed(1), "self_improve": shared} and replayed(1) == 2
    assert (f"the arms saw different numbers of real episodes (WebEvolver {shared + 2}, self-improve {shared}): "
            "their difference is not the world model's alone") in one.warnings
    # Round 2: the self-improve arm samples with its own round-1 policy into its own stages.
    two = result["rounds"][2]
    spec = read_identity(store, "evo", 2, "sample-self").params["policy"]
    assert spec["adapter"] == str(store.local_dir(adapter_uri(store, "evo", 1, "finetune_self"), download_cache()))
    assert read_identity(store, "evo", 2, "sample").params["policy"]["adapter"] == str(
        store.local_dir(adapter_uri(store, "evo", 1, "finetune"), download_cache()))
    assert rows(2, "sample-self").task_id.tolist() != [] and set(rows(2, "sample-self").task_id) == set(
        rows(2, "sample").task_id)
    assert store.exists("evo", 2, "sample-self-judge") and store.exists("evo", 2, "sft-self", table_name="examples")
    assert two.real_episodes == {"webevolver": shared + len(rows(2, "sample")) + replayed(1) + replayed(2),
                                 "self_improve": shared + len(rows(2, "sample-self"))}
    # Each arm trained on its own examples: the tiny policy keeps none of its own, so the sets are
    # equal, and `arms_identical` says what their digests say.
    for arm in (WEBEVOLVER, SELF_IMPROVE):
        examples = [e for r, stage in arm.training_data(2) if store.exists("evo", r, stage)
                    for e in read_sft_parquet(store, "evo", r, stage)]
        assert two.training[arm.name].examples == len(examples)
        assert two.training[arm.name].data_digest == examples_digest(examples)
    assert two.arms_identical is (two.training["webevolver"].data_digest == two.training["self_improve"].data_digest)


def test_next_round_is_the_first_without_a_trained_policy(tmp_path):
    from evolver_core.data.identity import StageIdentity
    from evolver_core.data.run_layout import next_round, open_stage, previous_adapter

    store = Storage(str(tmp_path))
    assert next_round(store, "n") == 0
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "adapter_config.json").write_text("{}")
    for i in (0, 1):
        store.put_dir(tmp_path / "trained", "n", i, "finetune", "adapter")
    (tmp_path / "runs" / "n" / "round=2" / "sample").mkdir(parents=True)  # a round that never finished training
    (tmp_path / "runs" / "n" / "round=2" / "finetune" / "adapter").mkdir(parents=True)  # an upload never committed
    assert next_round(store, "n") == 2
    assert previous_adapter(store, "n", 2).endswith("round=1/finetune/adapter")
    with pytest.raises(FileNotFoundError, match="run round 2 of run 'n' first"):
        previous_adapter(store, "n", 3)
    # Round 2's self-improve arm samples with round 1's: a round whose self-improve policy started
    # and is not trained is not done.
    open_stage(store, "n", 1, "finetune_self", StageIdentity(stage="finetune_self", code="c"))
    assert next_round(store, "n") == 1
    store.put_dir(tmp_path / "trained", "n", 1, "finetune_self", "adapter")
    assert next_round(store, "n") == 2
    assert previous_adapter(store, "n", 2, "finetune_self").endswith("round=1/finetune_self/adapter")


def test_each_arm_trains_on_its_own_chain_after_the_shared_rounds():
    """Rounds 0 and 1 are shared (the demonstrations; round 1's sample, drawn from round 0's
    policy); from round 2 the self-improve arm learns from its own samples, never the
    WebEvolver policy's."""
    assert WEBEVOLVER.training_data(1) == ((0, "sft"), (0, "synth_sft"), (1, "sft"), (1, "synth_sft"))
    assert SELF_IMPROVE.training_data(1) == ((0, "sft"), (1, "sft"))
    assert SELF_IMPROVE.training_data(3) == ((0, "sft"), (1, "sft"), (2, "sft-self"), (3, "sft-self"))
    assert [SELF_IMPROVE.sample_stage(r) for r in range(3)] == ["sample", "sample", "sample-self"]
    assert WEBEVOLVER.training_data(2)[-2:] == ((2, "sft"), (2, "synth_sft"))


def test_training_progress_counts_steps_or_epochs():
    """The finetune progress bar: steps of max_steps, or the Trainer's fractional epoch where
    the epochs decide (max_steps None), never 100% after one step."""
    from evolver_core.config import TrainingConfig
    from tasks.train import done_fraction

    assert done_fraction(TrainingConfig(max_steps=4), 1, {"loss": 1.0, "epoch": 0.5}) == 0.25
    by_epochs = TrainingConfig(num_train_epochs=2.0)
    assert done_fraction(by_epochs, 1, {"loss": 1.0, "epoch": 0.1}) == pytest.approx(0.05)
    assert done_fraction(by_epochs, 20, {"epoch": 2.0}) == 1.0
