"""Sampling episodes concurrently into Parquet, resuming after a failure, and the CLI on top."""

import json
import subprocess
import sys

import pytest

from evolver_core.agents.oracle import OracleAgent
from evolver_core.config import SamplingConfig
from evolver_core.contracts.agent import EXPLORER
from evolver_core.data.episodes import read_episodes
from evolver_core.data.run_layout import SAMPLE
from evolver_core.data.storage import Storage
from evolver_core.sampling.sampler import SampleConfig, SamplingError, sample_trajectories
from evolver_core.suites.miniwob import MiniWoBSuite
from evolver_core.stages.sample import SampleInputs, run_sample
from evolver_core.suites.registry import select_tasks
from evolver_core.training.sft import EXPLORATION, convert_trajectories
from evolver_core.world_model.model import transitions_from_records
from infra.serving import serve


class FlakyAgent(OracleAgent):
    """The oracle, except that episodes of one task blow up (a model server dying mid-stage)."""

    def __init__(self, suite, bad_site):
        super().__init__(suite)
        self.bad_site = bad_site

    def start(self, task):
        if task.site == self.bad_site:
            raise ConnectionError("model server went away")
        super().start(task)


async def test_failed_episodes_keep_finished_work_and_a_rerun_resumes(tmp_path):
    suite = MiniWoBSuite(["click-test", "enter-text", "focus-text"], seeds_per_task=2)
    await suite.start()
    tasks = suite.tasks("train")
    store = Storage(str(tmp_path))
    cfg = SampleConfig(run_id="r1", sampling=SamplingConfig(samples=2, concurrency=2))
    with pytest.raises(SamplingError, match=r"4 of 12 episodes ended in an error .* 8 finished trajectories are "
                                            r"stored"):
        await sample_trajectories(suite, tasks, lambda t, k: FlakyAgent(suite, "enter-text"), store, cfg)
    # The failed episodes are stored as error episodes (with their error), never scored
    stored = store.read_table("r1", 0, "sample", table_name="trajectories").to_pandas()
    errors = stored[stored.stop_reason == "error"]
    assert len(stored) == 12 and len(errors) == 4 and errors.gold_reward.isna().all()
    assert errors.error.str.len().gt(0).all()
    summary = await sample_trajectories(suite, tasks, lambda t, k: OracleAgent(suite), store, cfg)
    assert (summary.new, summary.skipped, summary.trajectories) == (4, 8, 12)
    trajs = store.read_table("r1", 0, "sample", table_name="trajectories").to_pandas()
    assert trajs.trajectory_id.is_unique and len(trajs) == 12
    assert summary.success_rate == 1.0 and summary.action_validity == 1.0
    steps = store.read_table("r1", 0, "sample", table_name="steps").to_pandas()
    assert set(steps.trajectory_id) == set(trajs.trajectory_id)
    assert (steps.groupby("trajectory_id").step.max() + 1 == trajs.set_index("trajectory_id").n_steps).all()
    await suite.stop()


def test_select_tasks_round_robins_sites():
    suite = MiniWoBSuite(["click-test", "enter-text"], seeds_per_task=3)
    suite._server = type("S", (), {"url": "http://x/", "netloc": "x"})()
    assert [t.site for t in select_tasks(suite.tasks("train"), 3)] == ["click-test", "enter-text", "click-test"]


def test_cli_sample_then_show(tmp_path):
    cmd = [sys.executable, "-m", "cli.main"]
    out = subprocess.run(cmd + ["sample", "--suite", "miniwob", "--tasks", "3", "--policy", "oracle", "--run", "c1",
                                "--miniwob-tasks", "enter-text,click-button,login-user",
                                "--storage", str(tmp_path), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["run"] == "c1" and summary["trajectories"] == 3 and summary["success_rate"] == 1.0
    assert summary["action_validity"] == 1.0 and summary["judge_agreement"] is None
    shown = subprocess.run(cmd + ["show", "c1", "--storage", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for text in ("Thought:", "Action: click [", "[press_enter_after=0]", "gold reward 1"):
        assert text in shown.stdout, text
    missing = subprocess.run(cmd + ["show", "nope", "--storage", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode != 0 and "no run 'nope'" in missing.stderr + missing.stdout


async def test_round0_explorations_give_the_world_model_failed_ends_and_the_policy_nothing(tmp_path):
    """Real scripted episodes of real MiniWoB tasks: each task's demonstration, then one
    exploration; the explorations' failed ends reach the world model's transitions, and the
    policy's SFT filter keeps the demonstrations alone."""
    sampling = SamplingConfig(miniwob_tasks="click-button,click-link", demo_explore=1, max_steps=5).demonstrations()
    assert sampling.samples == 2 and [sampling.explores(k) for k in (0, 1)] == [False, True]
    assert not sampling.greedy_once().explores(0)  # evaluations never explore
    await run_sample(SampleInputs(str(tmp_path), "r", 0, SAMPLE, "train", 8, None, sampling), serve)
    trajs, steps = read_episodes(Storage(str(tmp_path)), "r", 0, SAMPLE)
    demos = [t for t in trajs if t.sample == 0]
    explored = [t for t in trajs if t.sample == 1]
    assert len(demos) == len(explored) == 8
    assert {t.model for t in demos} == {"oracle"} and all(t.gold_reward == 1 for t in demos)
    assert {t.model for t in explored} == {EXPLORER}
    failed_ends = [t for t in transitions_from_records(trajs, steps) if t.ends and t.success is False]
    assert failed_ends and {t.trajectory_id for t in failed_ends} <= {t.trajectory_id for t in explored}
    conv = convert_trajectories(trajs, steps, use_gold=True)
    assert conv.kept == 8 and conv.reasons[EXPLORATION] == 8
