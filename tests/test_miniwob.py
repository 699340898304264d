"""MiniWoB++ served offline, episodes seeded and scored from the page, solved by the oracle."""

import pytest

from evolver_core.agents.oracle import OracleAgent
from evolver_core.browser.env import launch_browser
from evolver_core.sampling.rollout import run_episode
from evolver_core.suites.miniwob import EASY_TASKS, MiniWoBSuite, all_task_names


@pytest.fixture
async def suite():
    s = MiniWoBSuite("easy", seeds_per_task=2)
    await s.start()
    yield s
    await s.stop()


def test_all_tasks_and_the_easy_subset_are_exposed():
    names = all_task_names()
    assert len(names) > 100 and "login-user" in names and "book-flight" in names
    assert set(EASY_TASKS) <= set(names) and len(EASY_TASKS) >= 15
    with pytest.raises(ValueError, match="unknown MiniWoB tasks: nope"):
        MiniWoBSuite(["nope"])


async def test_splits_have_disjoint_seeds(suite):
    train, validation, test = suite.tasks("train"), suite.tasks("validation"), suite.tasks("test")
    assert len(train) == len(validation) == len(test) == 2 * len(EASY_TASKS)
    seeds = [{t.seed for t in split} for split in (train, validation, test)]
    assert not seeds[0] & seeds[1] and not seeds[1] & seeds[2] and not seeds[0] & seeds[2]
    assert all(t.split == "validation" for t in validation)
    assert suite.tasks() == train + validation + test
    assert all(t.allowed_hosts == (suite._server.netloc,) for t in train)


async def test_an_unknown_split_is_refused_not_served_test_seeds(suite):
    with pytest.raises(ValueError, match="unknown MiniWoB split 'valid'; choose one of train, validation, test"):
        suite.tasks("valid")
    with pytest.raises(ValueError, match="at most 50000 seeds"):
        MiniWoBSuite("easy", seeds_per_task=50_001)


async def test_oracle_solves_every_easy_task_on_unseen_seeds(suite):
    async with launch_browser() as browser:
        env = await browser.new_env(suite)
        failures = []
        for task in suite.tasks("test")[::2]:  # one test seed per task
            ep = await run_episode(env, task, OracleAgent(suite))
            if ep.gold_reward != 1.0 or ep.stop_reason != "done":  # MiniWoB ends the episode itself
                failures.append((task.id, ep.task.query, [s.turn.action for s in ep.steps]))
        assert not failures


async def test_seeded_utterances_page_reuse_and_wrong_answers(suite):
    task = next(t for t in suite.tasks("train") if t.site == "click-button")
    async with launch_browser() as browser:
        env = await browser.new_env(suite)
        await env.reset(task)
        first = env.task.query
        await env.page.evaluate("window.__marker = 1")
        await env.reset(task)
        assert env.task.query == first, "same seed, different problem"
        assert await env.page.evaluate("window.__marker") == 1, "page reloaded instead of reused"
        other = await env.reset(task.with_(seed=task.seed + 1, id=task.id + "x"))
        assert other is not None
        # a wrong click ends the episode with no reward; clicking the cover afterwards changes nothing
        obs = await env.reset(task)
        target = env.task.query.split('"')[1]
        wrong = next(e for e in obs.find("button") if e.name != target)
        await env.step(f"click [{wrong.id}]")
        obs = await env.step("click [1]")
        assert await suite.evaluate(env.episode_state("done")) == 0.0
