"""One evolution round of WebEvolver (paper section 3, Figure 1), as the stages run:

    real trajectories   round 0: scripted demonstrations; round i: policy M_{i-1}, k samples
        -> judge (r̂) -> to_sft (rejection sampling)
    world model         wm_data (transitions of successful AND failed trajectories, distilled
                        rationales) -> finetune_wm: M_w on rounds 0..i
    synthetic           synthesize: for the queries that failed, M_{i-1} acts on the pages M_w
                        predicts (<= synth_max_actions), judged by r̂ -> to_sft
    policy              finetune: M_i, a fresh LoRA on the real + synthetic SFT data of rounds 0..i
    evaluation          eval (M_i on the test split), eval-wmla<d> (M_i with look-ahead through
                        M_w, for each depth d), fidelity (M_w's STR / Sim. / O/A on the real
                        transitions of eval: test tasks it never trained on)

Round 0 is the warm start (imitation learning, as OpenWebVoyager does): a 135M model rarely
succeeds zero-shot, so the suites' scripted solvers play the demonstration tasks and their
gold-solved trajectories are the first SFT data; it has no synthesis (no failed policy
queries). Synthesis uses M_{i-1}, the policy whose queries failed, with the newest M_w (the
paper pairs its second world model with the better first policy); so each round trains two
adapters (M_w, M_i), not three. Synthetic trajectories are kept by r̂ alone (they have no
gold), whatever the preset's `filter`.

Every stage is a cached task (`tasks/`): rerunning a finished round is all cache hits; a
round killed inside a stage resumes that stage (sampling and synthesis skip stored
trajectories).
"""

from __future__ import annotations

import os
from typing import Optional

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait

from evolver_core.config import LookaheadSpec, ModelSpec
from evolver_core.presets import Preset, get_preset
from evolver_core.storage import Storage
from tasks.common import local_cache, results_storage
from tasks.sample import _key, judge, sample
from tasks.train import ADAPTER, finetune, to_sft
from tasks.synthesize import SYNTH_STAGE, synthesize
from tasks.world_model import WM_SFT_STAGE, fidelity, wm_data

STORAGE_ENV = "WEBEVOLVER_STORAGE"


def storage_root(storage: Optional[str]) -> str:
    return storage or os.environ.get(STORAGE_ENV) or os.getcwd()


def _adapter_uri(store: Storage, run_id: str, round_: int) -> str:
    return store.uri(run_id, round_, "finetune").rstrip("/") + f"/{ADAPTER}"


def _has_adapter(store: Storage, run_id: str, round_: int) -> bool:
    return store.fs.exists(store.fs._strip_protocol(_adapter_uri(store, run_id, round_)))


def previous_adapter(root: str, run_id: str, round_: int) -> str:
    """The policy of round i-1, as stored by its finetune stage."""
    store = Storage(root)
    if not _has_adapter(store, run_id, round_ - 1):
        raise FileNotFoundError(f"round {round_} samples with round {round_ - 1}'s policy, but "
                                f"{_adapter_uri(store, run_id, round_ - 1)} does not exist: "
                                f"run round {round_ - 1} of run {run_id!r} first")
    return _adapter_uri(store, run_id, round_ - 1)


def next_round(root: str, run_id: str) -> int:
    """The first round of `run_id` without a trained policy: what a nightly schedule runs next."""
    store, i = Storage(root), 0
    while _has_adapter(store, run_id, i):
        i += 1
    return i


def adapter_spec(p: Preset, root: str, adapter_uri: Optional[str]) -> ModelSpec:
    """The preset's base model with a stored LoRA adapter (a policy or the world model), fetched locally."""
    adapter = str(Storage(root).local_dir(adapter_uri, local_cache())) if adapter_uri else None
    return ModelSpec(model=p.model, backend=p.backend, adapter=adapter)


@flow(name="evolve-round")
def evolve_round(run_id: str = "nightly", round: Optional[int] = None, suite: Optional[str] = None,
                 preset: str = "smoke", storage: Optional[str] = None, adapter: Optional[str] = None,
                 overrides: Optional[dict] = None) -> dict:
    """Run round `round` of run `run_id`; None: the next one (the first without a trained
    policy), so a nightly schedule advances one round a night. `adapter` overrides the
    previous round's policy; `overrides` changes preset fields (e.g. {"train_tasks": 50})."""
    p = get_preset(preset).with_(suite=suite, **(overrides or {}))
    root = storage_root(storage)
    if round is None:
        round = next_round(root, run_id)
        get_run_logger().info(f"run {run_id!r}: rounds 0..{round - 1} are trained; running round {round}")
    rs = results_storage(root)
    sample_t, judge_t, to_sft_t, finetune_t, wm_data_t, synthesize_t, fidelity_t = (
        t.with_options(result_storage=rs) for t in (sample, judge, to_sft, finetune, wm_data, synthesize, fidelity))
    common = dict(max_steps=p.max_steps, concurrency=p.concurrency, miniwob_tasks=p.miniwob_tasks)
    base = ModelSpec(model=p.model, backend=p.backend)
    judge_spec = ModelSpec(model=p.judge_model or p.model, backend=p.backend)

    # Real trajectories: the scripted demonstrations (round 0) or the previous policy M_{i-1}.
    if round == 0:
        sampled = [sample_t(root, run_id, 0, "sample", p.suite, "train", p.demo_tasks, None, **common)]
        judged = None
        sft = [to_sft_t(root, run_id, 0, "sample", use_gold=True, sampled=sampled)]
    else:
        previous = adapter_spec(p, root, adapter or previous_adapter(root, run_id, round))
        futures = [sample_t.submit(root, run_id, round, "sample", p.suite, "train", p.train_tasks, previous,
                                   samples=p.samples, temperature=p.temperature, shard=(i, p.shards), **common)
                   for i in range(p.shards)]
        wait(futures)
        sampled = [f.result() for f in futures]
        judged = judge_t(root, run_id, round, judge_spec, sampled=sampled, max_tokens=p.judge_max_tokens)
        sft = [to_sft_t(root, run_id, round, "sample", use_gold=p.filter == "gold", sampled=sampled, judged=judged)]

    # The world model M_w on the transitions of rounds 0..i, successful or not.
    wm = wm_data_t(root, run_id, round, base, sampled=sampled)
    wm_trained = finetune_t(root, run_id, round, p.model, p.wm_finetune_steps, p.wm_max_length, p.learning_rate,
                            sft=[wm], sft_stage=WM_SFT_STAGE, out_stage="finetune_wm")
    world_model = adapter_spec(p, root, wm_trained["adapter_uri"])

    # Synthetic trajectories for the failed queries: M_{i-1} acting on M_w's pages, judged by r̂.
    synth = None
    if round > 0:
        synth = synthesize_t(root, run_id, round, p.suite, "train", previous, world_model, judge_spec,
                             use_gold=p.filter == "gold", max_queries=p.synth_queries, temperature=p.temperature,
                             max_actions=p.synth_max_actions, concurrency=p.concurrency,
                             miniwob_tasks=p.miniwob_tasks, wm_max_tokens=p.wm_max_tokens,
                             judge_max_tokens=p.judge_max_tokens, upstream=[*sampled, judged, wm_trained])
        if synth["trajectories"]:
            sft.append(to_sft_t(root, run_id, round, SYNTH_STAGE, use_gold=False, sampled=[synth]))

    # The round's WebEvolver policy M_i: real and synthetic SFT data of rounds 0..i.
    trained = finetune_t(root, run_id, round, p.model, p.finetune_steps, p.max_length, p.learning_rate, sft=sft)
    policy = adapter_spec(p, root, trained["adapter_uri"])
    evaluated = sample_t(root, run_id, round, "eval", p.suite, "test", p.test_tasks, policy, after=[trained], **common)
    lookahead = {
        str(d): sample_t(root, run_id, round, f"eval-wmla{d}", p.suite, "test", p.lookahead_tasks or p.test_tasks,
                         policy, lookahead=LookaheadSpec(world_model=world_model, scorer=judge_spec, depth=d,
                                                         candidates=p.lookahead_candidates,
                                                         wm_max_tokens=p.wm_max_tokens),
                         after=[trained, wm_trained], **common)
        for d in p.lookahead_depths}
    fid = fidelity_t(root, run_id, round, world_model, judge_spec, source_stage="eval",
                     max_transitions=p.fidelity_transitions, wm_max_tokens=p.wm_max_tokens,
                     after=[evaluated, wm_trained])

    summary = {
        "run": run_id, "round": round, "preset": p.name, "suite": p.suite, "storage": Storage(root).uri(run_id),
        "real_trajectories": sum(s["trajectories"] for s in sampled),
        "synthetic_trajectories": synth["trajectories"] if synth else 0,
        "failed_queries": synth["failed_queries"] if synth else 0,
        "synthetic_kept": sum(x["kept"] for x in sft[1:]),
        "train_success_rate": _mean([s["success_rate"] for s in sampled]),
        "judge_agreement": judged["agreement"] if judged else None,
        "sft_examples": trained["examples"], "kept_trajectories": sft[0]["kept"],
        "adapter": trained["adapter_uri"], "train_loss": trained["train_loss"],
        "success_rate": evaluated["success_rate"], "action_validity": evaluated["action_validity"],
        "eval_tasks": evaluated["trajectories"],
        "success_rate_lookahead": {d: r["success_rate"] for d, r in lookahead.items()},
        "world_model": {"str": fid["str"], "sim": fid["sim"], "oa": fid["oa"], "fidelity_transitions": fid["n"],
                        "transitions": wm["transitions"], "kept": wm["kept"], "examples": wm_trained["examples"],
                        "adapter": wm_trained["adapter_uri"], "train_loss": wm_trained["train_loss"]},
    }
    _report(summary)
    return summary


def _mean(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _report(s: dict) -> None:
    wm = s["world_model"]
    create_table_artifact([{k: v for k, v in s.items() if not isinstance(v, dict)}],
                          key=f"{_key(s['run'])}-r{s['round']}-summary", description=f"round {s['round']} summary")
    create_markdown_artifact(
        f"## Round {s['round']} of `{s['run']}` ({s['preset']}, {s['suite']})\n\n"
        f"| | |\n|---|---|\n| real trajectories sampled | {s['real_trajectories']} |\n"
        f"| kept for training | {s['kept_trajectories']} |\n"
        f"| synthetic trajectories (failed queries) | {s['synthetic_trajectories']} ({s['failed_queries']}) |\n"
        f"| synthetic kept (r̂) | {s['synthetic_kept']} |\n| SFT examples (rounds 0..{s['round']}) | {s['sft_examples']} |\n"
        f"| test success rate | {s['success_rate']} |\n"
        + "".join(f"| test success, look-ahead d={d} | {v} |\n" for d, v in s["success_rate_lookahead"].items())
        + f"| action validity | {s['action_validity']} |\n"
        f"| world model STR / Sim. / O/A | {wm['str']} / {wm['sim']} / {wm['oa']} |\n\n"
        f"Data: `{s['storage']}`  \nPolicy adapter: `{s['adapter']}`\n",
        key=f"{_key(s['run'])}-r{s['round']}-report")
