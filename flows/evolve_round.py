"""One evolution round: sample -> judge -> to_sft -> finetune -> evaluate, and beside the
policy the world model: sample -> wm_data (transitions + distilled rationales) -> finetune_wm.

Round 0 is the warm start (imitation learning, as OpenWebVoyager does): the suites' scripted
solvers play the demonstration tasks and their gold-solved trajectories are the first SFT
data, because a 135M model rarely succeeds zero-shot. Round i >= 1 samples with the policy
of round i-1 (its LoRA adapter), judges, keeps the successes, and trains a fresh LoRA from
the base model on the SFT data of rounds 0..i (the paper's union).

Every stage is a cached task (`tasks/`): rerunning a finished round is all cache hits; a
round killed inside a stage resumes that stage (sampling skips stored trajectories).
"""

from __future__ import annotations

import os
from typing import Optional

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait

from evolver_core.config import ModelSpec
from evolver_core.presets import Preset, get_preset
from evolver_core.storage import Storage
from tasks.common import local_cache, results_storage
from tasks.sample import _key, judge, sample
from tasks.train import ADAPTER, finetune, to_sft
from tasks.world_model import WM_SFT_STAGE, wm_data

STORAGE_ENV = "WEBEVOLVER_STORAGE"


def storage_root(storage: Optional[str]) -> str:
    return storage or os.environ.get(STORAGE_ENV) or os.getcwd()


def previous_adapter(root: str, run_id: str, round_: int) -> str:
    """The policy of round i-1, as stored by its finetune stage."""
    store = Storage(root)
    uri = store.uri(run_id, round_ - 1, "finetune").rstrip("/") + f"/{ADAPTER}"
    if not store.fs.exists(store.fs._strip_protocol(uri)):
        raise FileNotFoundError(f"round {round_} samples with round {round_ - 1}'s policy, but {uri} does not exist: "
                                f"run round {round_ - 1} of run {run_id!r} first")
    return uri


def policy_spec(p: Preset, root: str, adapter_uri: Optional[str]) -> ModelSpec:
    adapter = str(Storage(root).local_dir(adapter_uri, local_cache())) if adapter_uri else None
    return ModelSpec(model=p.model, backend=p.backend, adapter=adapter)


@flow(name="evolve-round")
def evolve_round(run_id: str = "nightly", round: int = 1, suite: Optional[str] = None, preset: str = "smoke",
                 storage: Optional[str] = None, adapter: Optional[str] = None,
                 overrides: Optional[dict] = None) -> dict:
    """Run round `round` of run `run_id`. `adapter` overrides the previous round's policy;
    `overrides` changes preset fields (e.g. {"train_tasks": 50, "samples": 4})."""
    p = get_preset(preset).with_(suite=suite, **(overrides or {}))
    root = storage_root(storage)
    rs = results_storage(root)
    sample_t, judge_t, to_sft_t, finetune_t, wm_data_t = (
        t.with_options(result_storage=rs) for t in (sample, judge, to_sft, finetune, wm_data))
    common = dict(max_steps=p.max_steps, concurrency=p.concurrency, miniwob_tasks=p.miniwob_tasks)

    if round == 0:
        sampled = [sample_t(root, run_id, 0, "sample", p.suite, "train", p.demo_tasks, None, **common)]
        judged = None
        sft = to_sft_t(root, run_id, 0, "sample", use_gold=True, sampled=sampled)
    else:
        policy = policy_spec(p, root, adapter or previous_adapter(root, run_id, round))
        futures = [sample_t.submit(root, run_id, round, "sample", p.suite, "train", p.train_tasks, policy,
                                   samples=p.samples, temperature=p.temperature, shard=(i, p.shards), **common)
                   for i in range(p.shards)]
        wait(futures)
        sampled = [f.result() for f in futures]
        judged = judge_t(root, run_id, round, ModelSpec(model=p.judge_model or p.model, backend=p.backend),
                         sampled=sampled, max_tokens=p.judge_max_tokens)
        sft = to_sft_t(root, run_id, round, "sample", use_gold=p.filter == "gold", sampled=sampled, judged=judged)
    trained = finetune_t(root, run_id, round, p.model, p.finetune_steps, p.max_length, p.learning_rate, sft=[sft])
    wm = wm_data_t(root, run_id, round, ModelSpec(model=p.model, backend=p.backend), sampled=sampled)
    wm_trained = finetune_t(root, run_id, round, p.model, p.wm_finetune_steps, p.wm_max_length, p.learning_rate,
                            sft=[wm], sft_stage=WM_SFT_STAGE, out_stage="finetune_wm")
    evaluated = sample_t(root, run_id, round, "eval", p.suite, "test", p.test_tasks,
                         policy_spec(p, root, trained["adapter_uri"]), after=[trained], **common)

    summary = {
        "run": run_id, "round": round, "preset": p.name, "suite": p.suite, "storage": Storage(root).uri(run_id),
        "real_trajectories": sum(s["trajectories"] for s in sampled),
        "train_success_rate": _mean([s["success_rate"] for s in sampled]),
        "judge_agreement": judged["agreement"] if judged else None,
        "sft_examples": trained["examples"], "kept_trajectories": sft["kept"],
        "adapter": trained["adapter_uri"], "train_loss": trained["train_loss"],
        "success_rate": evaluated["success_rate"], "action_validity": evaluated["action_validity"],
        "eval_tasks": evaluated["trajectories"],
        "world_model": {"transitions": wm["transitions"], "kept": wm["kept"], "examples": wm_trained["examples"],
                        "adapter": wm_trained["adapter_uri"], "train_loss": wm_trained["train_loss"]},
    }
    _report(summary)
    return summary


def _mean(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _report(s: dict) -> None:
    create_table_artifact([{k: v for k, v in s.items() if not isinstance(v, dict)}],
                          key=f"{_key(s['run'])}-r{s['round']}-summary", description=f"round {s['round']} summary")
    create_markdown_artifact(
        f"## Round {s['round']} of `{s['run']}` ({s['preset']}, {s['suite']})\n\n"
        f"| | |\n|---|---|\n| trajectories sampled | {s['real_trajectories']} |\n"
        f"| kept for training | {s['kept_trajectories']} |\n| SFT examples (rounds 0..{s['round']}) | {s['sft_examples']} |\n"
        f"| test success rate | {s['success_rate']} |\n| action validity | {s['action_validity']} |\n\n"
        f"Data: `{s['storage']}`  \nPolicy adapter: `{s['adapter']}`\n",
        key=f"{_key(s['run'])}-r{s['round']}-report")
