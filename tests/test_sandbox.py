"""The sandbox suite: task counts and splits, determinism, answer matching, the servers'
per-visitor state, and the scripted solver solving one task per template in real chromium."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from http.cookiejar import CookieJar

import pytest

from evolver_core.agents.oracle import OracleAgent
from evolver_core.browser.env import launch_browser
from evolver_core.contracts.observation import Element, Observation
from evolver_core.sampling.rollout import run_episode
from evolver_core.contracts.task import EpisodeState, Task
from evolver_core.suites.sandbox import SandboxSuite
from evolver_core.suites.sandbox.answers import matches, tokens
from evolver_core.suites.sandbox.solver import MAX_SCROLLS, PlanSolver
from evolver_core.suites.sandbox.spec import answer, click, search


@pytest.fixture(scope="module")
def suite():
    s = SandboxSuite()
    asyncio.run(s.start())
    yield s
    asyncio.run(s.stop())


def _state(task: Task, answer_text: str | None) -> EpisodeState:
    return EpisodeState(task=task, answer=answer_text, urls=[], observations=[], page=None)


def test_tasks_need_start():
    with pytest.raises(RuntimeError, match="start"):
        SandboxSuite().tasks()


def test_counts_sites_and_ids(suite):
    tasks = suite.tasks()
    assert len(tasks) >= 300
    sites = Counter(t.site for t in tasks)
    assert len(sites) >= 5 and set(sites) == {"shop", "recipes", "code", "dictionary", "news"}
    assert len({t.id for t in tasks}) == len(tasks)
    for t in tasks:
        assert re.fullmatch(rf"sandbox/{t.site}/{t.meta['template']}/\d{{3}}", t.id)
        assert t.suite == "sandbox" and t.start_url == f"http://{t.allowed_hosts[0]}/"
        assert ("answer" in t.gold) != ("state" in t.gold)
    hosts = {t.site: t.allowed_hosts for t in tasks}
    assert len(set(hosts.values())) == len(hosts), "each site has its own host:port"
    assert len(suite.tasks("train")) + len(suite.tasks("test")) == len(tasks)
    assert {t.site for t in suite.tasks("test")} == set(sites)


def test_test_split_is_not_a_copy_of_training(suite):
    train, test = suite.tasks("train"), suite.tasks("test")
    train_templates = {(t.site, t.meta["template"]) for t in train}
    test_templates = {(t.site, t.meta["template"]) for t in test}
    test_only = test_templates - train_templates
    assert {site for site, _ in test_only} == {t.site for t in test}, "every site has test-only templates"
    assert not train_templates - test_templates

    def entities(tasks: list[Task]) -> set[str]:
        return {e for t in tasks for e in t.meta["entities"]}

    def roots(tasks: list[Task]) -> set[str]:
        return {e.split("/")[0] for e in entities(tasks)}

    assert entities(train) and entities(test)
    assert not entities(train) & entities(test)
    assert not roots(train) & roots(test)
    assert not {t.query for t in train} & {t.query for t in test}


_DIGEST = """
import asyncio, hashlib, json
from evolver_core.suites.sandbox import SandboxSuite
suite = SandboxSuite()
asyncio.run(suite.start())
rows = [(t.id, t.split, t.query, t.gold, t.meta) for t in suite.tasks()]
print(hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest())
asyncio.run(suite.stop())
"""


def _digest(tasks: list[Task]) -> str:
    rows = [(t.id, t.split, t.query, t.gold, t.meta) for t in tasks]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def test_tasks_are_deterministic(suite):
    other = SandboxSuite()
    asyncio.run(other.start())
    try:
        assert _digest(other.tasks()) == _digest(suite.tasks())
        assert other.tasks()[0].start_url != suite.tasks()[0].start_url  # only the ports differ
    finally:
        asyncio.run(other.stop())
    # ...and in another process with another string-hash seed.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _DIGEST], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(suite.tasks())


def test_answer_tasks_score_gold_and_reject_wrong_answers(suite):
    answer_tasks = [t for t in suite.tasks() if "answer" in t.gold]
    for t in answer_tasks:
        for good in [t.gold["answer"], *t.gold.get("aliases", [])]:
            assert asyncio.run(suite.evaluate(_state(t, good))) == 1.0, (t.id, good)
        assert asyncio.run(suite.evaluate(_state(t, "I could not find it"))) == 0.0
        assert asyncio.run(suite.evaluate(_state(t, None))) == 0.0


def test_state_tasks_score_zero_without_a_page(suite):
    t = next(t for t in suite.tasks() if "state" in t.gold)
    assert asyncio.run(suite.evaluate(_state(t, "done"))) == 0.0


@pytest.mark.parametrize(
    "said, gold, ok",
    [
        ("$19.99", "19.99", True),
        ("19.990", "$19.99", True),
        ("The cheapest one costs $19.99.", "19.99", True),
        ("12,345", "12345", True),
        ("4.0", "4", True),
        ("  MIT  License ", "MIT License", True),
        ("v2.3.1", "v2.3.1", True),
        ("2.3.1", "v2.3.1", False),
        ("19.98", "19.99", False),
        ("it could be " + " ".join(str(n) for n in range(5, 40)), "19", False),
    ],
)
def test_answer_matching_rule(said, gold, ok):
    assert matches(said, {"answer": gold}) is ok
    assert tokens("Ridgeline Vista, 28L!") == ["ridgeline", "vista", "28", "l"]


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))


def _json(opener: urllib.request.OpenerDirector, url: str) -> dict:
    return json.loads(opener.open(url).read())


def test_visitors_have_separate_state_and_reset_clears_it(suite):
    base = suite.base_url("shop")
    sku = suite.sites["shop"].products[0].sku
    alice, bob = _opener(), _opener()
    assert _json(alice, f"{base}/__state") == {"cart": {}}
    alice.open(f"{base}/cart/add", data=f"sku={sku}&qty=2".encode())
    assert _json(alice, f"{base}/__state") == {"cart": {sku: 2}}
    assert _json(bob, f"{base}/__state") == {"cart": {}}
    alice.open(f"{base}/__reset", data=b"")
    assert _json(alice, f"{base}/__state") == {"cart": {}}


def test_pages_render_and_unknown_pages_404(suite):
    opener = _opener()
    for site in suite.sites:
        html = opener.open(suite.base_url(site) + "/").read().decode()
        assert '<form role="search"' in html and "<nav" in html
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(suite.base_url(site) + "/no/such/page/here")
        assert err.value.code == 404


def test_pages_escape_what_visitors_type(suite):
    """Pages are autoescaped templates: a query shows as text, never as markup."""
    opener = _opener()
    for site, path in (("news", "/search"), ("recipes", "/recipes"), ("dictionary", "/search")):
        html = opener.open(f"{suite.base_url(site)}{path}?q=%3Cblink%3E%22x%27").read().decode()
        assert "<blink>" not in html and "&lt;blink&gt;" in html, site


def _obs(*elements: tuple[str, str]) -> Observation:
    return Observation(
        url="http://x/", tabs=[], elements=[Element(i, role, name, 1) for i, (role, name) in enumerate(elements, 1)]
    )


def test_solver_follows_its_plan_and_scrolls_for_missing_targets():
    plan = [
        search("Search", "tent", "Search first."),
        click("Alpine Tent", "Open it."),
        answer("99", "$99", "It costs $99.", seek="the price"),
    ]
    solver = PlanSolver(plan)
    assert solver.act(_obs(("searchbox", "Search"))).action == "type [1] [tent] [press_enter_after=1]"
    reply = solver.act(_obs(("link", "Other")))
    assert reply.action == "scroll [down]" and "Alpine Tent" in reply.thought
    assert solver.act(_obs(("link", "Other"), ("link", "Alpine Tent"))).action == "click [2]"
    reply = solver.act(_obs(("StaticText", "Price")))  # the evidence is not visible yet
    assert reply.action == "scroll [down]" and "the price" in reply.thought and "$99" not in reply.thought
    assert solver.act(_obs(("StaticText", "$99.00"))).action == "stop [99]"

    lost = PlanSolver([click("Nowhere", "Never there.")])
    actions = [lost.act(_obs(("link", "Other"))).action for _ in range(2 * MAX_SCROLLS + 2)]
    assert actions[:MAX_SCROLLS] == ["scroll [down]"] * MAX_SCROLLS and actions[-1] == "stop"


async def test_solver_solves_one_task_per_template_in_chromium():
    suite = SandboxSuite()
    await suite.start()
    try:
        picked: dict[tuple[str, str], Task] = {}
        for t in suite.tasks():  # train tasks come first: one per template, test-only ones too
            picked.setdefault((t.site, t.meta["template"]), t)
        tasks = list(picked.values())
        queue: asyncio.Queue[Task] = asyncio.Queue()
        for t in tasks:
            queue.put_nowait(t)
        rewards: dict[str, float | None] = {}
        async with launch_browser() as browser:

            async def worker() -> None:
                env = await browser.new_env(suite)
                while not queue.empty():
                    t = queue.get_nowait()
                    episode = await run_episode(env, t, OracleAgent(suite), max_steps=10)
                    rewards[t.id] = episode.gold_reward
                await env.close()

            await asyncio.gather(worker(), worker())

            # A state task scores 0 when nothing was done, and a stored task with a stale
            # port is resolved to this run's URL.
            state_task = next(t for t in tasks if "state" in t.gold)
            env = await browser.new_env(suite)
            obs = await env.reset(state_task.with_(start_url="http://127.0.0.1:9/"))
            assert obs.url == state_task.start_url
            assert await suite.evaluate(env.episode_state("done")) == 0.0
            await env.close()
        failed = {k: v for k, v in rewards.items() if v != 1.0}
        assert not failed, failed
        assert len(rewards) == len({(t.site, t.meta["template"]) for t in suite.tasks()}) >= 30
    finally:
        await suite.stop()
