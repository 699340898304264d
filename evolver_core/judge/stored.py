"""The judge stage: r̂ on every stored trajectory of a stage, written as the `judge` stage.

The sampled trajectories stay as they were (an artifact of their own); the judged copy of
each trajectory row, with verdict and reasoning, goes to `round=<i>/judge/trajectories`,
one shard per trajectory, so a killed judge stage resumes where it stopped. A reply without
a verdict is stored as `judge_verdict = None` and counted; rejection sampling treats it as a
failure.
"""

from __future__ import annotations

import asyncio
import dataclasses

from evolver_core.config import JudgeConfig
from evolver_core.contracts.prompt import render_observation
from evolver_core.data.episodes import read_episodes
from evolver_core.data.records import StepRecord, TrajectoryRecord, to_table
from evolver_core.data.run_layout import JUDGE, judged_stage
from evolver_core.data.stage_results import JudgeSummary
from evolver_core.data.storage import Storage
from evolver_core.judge.judge import DEFAULT_LAST_N, agreement, judge
from evolver_core.llm import LLMClient


def split_judged(rows: list[dict]) -> tuple[list[dict], dict[tuple[int, str, str], dict]]:
    """Trajectory rows of every stage -> (the rows of non-judge stages, judged copies by
    (round, judged stage, trajectory id))."""
    verdicts = {(t["round"], judged_stage(t["stage"]), t["trajectory_id"]): t for t in rows
                if judged_stage(t["stage"]) is not None}
    return [t for t in rows if judged_stage(t["stage"]) is None], verdicts


def verdict_row(t: dict, verdicts: dict[tuple[int, str, str], dict]) -> dict:
    """The row holding `t`'s verdict: its judged copy, else `t` itself (synthetic trajectories
    are judged as they are made, in their own rows)."""
    return verdicts.get((t["round"], t["stage"], t["trajectory_id"]), t)


def observations_by_trajectory(trajs: list[TrajectoryRecord], steps: list[StepRecord]) -> dict[str, list[str]]:
    """Each trajectory's observations as the agent read them (error first, then the page), in
    step order, and the page its last action led to where the episode did not end with `stop`."""
    out: dict[str, list[tuple[int, str]]] = {}
    for s in steps:
        out.setdefault(s.trajectory_id, []).append((s.step, render_observation(s.observation, s.error_shown)))
    shown = {tid: [o for _, o in sorted(rows)] for tid, rows in out.items()}
    last_error = {s.trajectory_id: s.error for s in sorted(steps, key=lambda s: s.step)}
    for t in trajs:
        if t.final_observation:
            shown.setdefault(t.trajectory_id, []).append(
                render_observation(t.final_observation, last_error.get(t.trajectory_id)))
    return shown


async def judge_trajectories(storage: Storage, run_id: str, round_: int, client: LLMClient, *,
                             source_stage: str = "sample", stage: str = JUDGE,
                             last_n: int = DEFAULT_LAST_N, concurrency: int = 4,
                             max_tokens: int = JudgeConfig.max_tokens) -> JudgeSummary:
    trajs, steps = read_episodes(storage, run_id, round_, source_stage)
    observations = observations_by_trajectory(trajs, steps)
    # Error episodes (a crashed page, a failing endpoint) have no outcome to judge.
    todo = [t for t in trajs if t.stop_reason != "error"
            and not storage.exists(run_id, round_, stage, "trajectories", t.trajectory_id)]
    gate = asyncio.Semaphore(concurrency)

    async def one(t: TrajectoryRecord) -> None:
        async with gate:
            v = await judge(client, t.query, t.final_answer, observations.get(t.trajectory_id, []), last_n=last_n,
                            max_tokens=max_tokens)
        judged = dataclasses.replace(t, stage=stage, judge_verdict=v.verdict, judge_reasoning=v.reasoning)
        storage.write_shard(run_id, round_, stage, "trajectories", to_table([judged]), t.trajectory_id)

    await asyncio.gather(*(one(t) for t in todo))
    return summarize_judged(storage, run_id, round_, stage, new=len(todo))


def summarize_judged(storage: Storage, run_id: str, round_: int, stage: str = JUDGE, *, new: int = 0) -> JudgeSummary:
    rows = storage.read_table(run_id, round_, stage, table_name="trajectories").select(
        ["judge_verdict", "gold_reward"]).to_pylist()
    verdicts = [r["judge_verdict"] for r in rows]
    no_gold = [r["judge_verdict"] for r in rows if r["gold_reward"] is None]
    return JudgeSummary(judged=len(rows), new=new, successes=sum(1 for v in verdicts if v == 1),
                        unparsable=sum(1 for v in verdicts if v is None),
                        agreement=agreement(verdicts, [r["gold_reward"] for r in rows]),
                        without_gold=len(no_gold), successes_without_gold=sum(1 for v in no_gold if v == 1),
                        stage=stage)
