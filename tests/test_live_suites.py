"""Live-website suites without a browser or network: task files, strict loading, the
offline answer of `start()`, GAIA answer matching and Mind2Web-Live key-node scoring."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from evolver_core.browser.allowlist import host_allowed
from evolver_core.suites import live
from evolver_core.contracts.task import ActionEvent, EpisodeState, SuiteUnavailable, Task, TaskFileError
from evolver_core.suites.live import gaia_answer_matches, live_suites, reachable
from evolver_core.suites.mind2web_live import (
    MATCH_FUNCTIONS,
    KeyNode,
    key_node_selectors,
    score_key_nodes,
    webcanvas_netloc,
)
from evolver_core.suites.taskfile import (
    allowed_hosts,
    data_dir,
    load_task_file,
    registrable_domain,
)


@pytest.fixture(scope="module")
def suites():
    return live_suites()


def state(task: Task, urls=(), events=(), answer: str | None = None) -> EpisodeState:
    episode = EpisodeState(task=task, answer=answer, urls=list(urls), observations=[], page=None)
    episode.events = list(events)  # what the browser environment fills
    return episode


# ---- the shipped task files ---------------------------------------------------------------


def test_task_counts(suites):
    assert len(suites["webvoyager"].tasks("test")) == 643
    assert len(suites["gaia-web"].tasks()) == 90
    assert len(suites["mind2web-live"].tasks("test")) == 104
    owv = suites["openwebvoyager"]
    assert (len(owv.tasks("train")), len(owv.tasks("test"))) == (2956, 862)
    sets = Counter(task.meta["set"] for task in owv.tasks("train"))
    assert sets == {"IL": 1516, "optim_iter1": 480, "optim_iter2": 480, "optim_iter3": 480}


def test_every_task_is_well_formed(suites):
    all_ids = [task.id for suite in suites.values() for task in suite.tasks()]
    assert len(all_ids) == len(set(all_ids))
    for name, suite in suites.items():
        for task in suite.tasks():
            assert task.suite == name and task.id.startswith(name + "/")
            assert task.start_url.startswith(("http://", "https://")) and task.query.strip()
            assert host_allowed(task.site, task.allowed_hosts)


def test_webvoyager_task_and_reference_answer(suites):
    task = suites["webvoyager"].tasks()[0]
    assert task.id == "webvoyager/Allrecipes--0"
    assert (task.site, task.start_url) == ("www.allrecipes.com", "https://www.allrecipes.com/")
    assert task.query.startswith("Provide a recipe for vegetarian lasagna")
    assert task.allowed_hosts == ("allrecipes.com", "*.allrecipes.com")
    assert task.gold["answer_type"] == "possible" and "Vegetarian Four Cheese Lasagna" in task.gold["answer"]
    assert all(t.gold["answer_type"] in ("golden", "possible") for t in suites["webvoyager"].tasks())
    search = next(t for t in suites["webvoyager"].tasks() if t.meta["web_name"] == "Google Search")
    assert search.allowed_hosts == ("*",)  # answers live wherever the search leads


def test_gaia_and_openwebvoyager_fields(suites):
    gaia = suites["gaia-web"].tasks()[0]
    assert (gaia.id, gaia.gold, gaia.meta["level"]) == ("gaia-web/level1-0", {"answer": "17"}, 1)
    owv = {task.id: task for task in suites["openwebvoyager"].tasks()}
    m2w = owv["openwebvoyager/mind2web_selected_web_516q/Mind2Web-eventbrite--000"]
    assert (m2w.split, m2w.meta["set"], m2w.meta["website"]) == ("train", "IL", "eventbrite")
    assert owv["openwebvoyager/webvoyager_for_iter1_150q/Allrecipes--20"].meta["set"] == "optim_iter1"
    assert owv["openwebvoyager/WebVoyager_test/Allrecipes--20"].split == "test"


def test_mind2web_live_tasks(suites):
    tasks = suites["mind2web-live"].tasks()
    first = tasks[0]
    assert (first.id, first.start_url) == ("mind2web-live/0", "https://www.gamestop.com/")
    assert first.query.startswith("Find the store location")
    nodes = [node for task in tasks for node in task.gold["key_nodes"]]
    assert len(nodes) == 443 and {node["function"] for node in nodes} <= set(MATCH_FUNCTIONS)
    mbta = tasks[6]  # its key nodes lead from mbta.com to governmentjobs.com
    assert mbta.allowed_hosts == ("mbta.com", "*.mbta.com", "governmentjobs.com", "*.governmentjobs.com")
    imdb = tasks[2]
    assert ".ipc-starbar__touch " in key_node_selectors(imdb)


GOOGLE = "https://www.google.com/"


def test_data_dir_override(tmp_path, monkeypatch):
    assert data_dir() == Path(__file__).resolve().parents[1] / "data" / "tasks"
    (tmp_path / "webvoyager").mkdir()
    (tmp_path / "webvoyager" / "GAIA_web.jsonl").write_text(
        json.dumps({"task_id": "t", "Level": 2, "Final answer": "4", "id": "x", "web": GOOGLE, "ques": "q"})
    )
    monkeypatch.setenv("WEBEVOLVER_DATA_DIR", str(tmp_path))
    assert [task.id for task in live_suites()["gaia-web"].tasks()] == ["gaia-web/x"]


# ---- strict loading -----------------------------------------------------------------------

GOOD = {"web_name": "Allrecipes", "id": "a--0", "ques": "Find a recipe.", "web": "https://www.allrecipes.com/"}


def jsonl(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def record(**changes) -> str:
    fields = {**GOOD, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...})


def test_user_task_file_loads(tmp_path):
    path = jsonl(tmp_path, [record(), "", record(id="a--1", web_name=...)])
    tasks = load_task_file(path, "mine")
    assert [task.id for task in tasks] == ["mine/a--0", "mine/a--1"]
    assert tasks[0].meta == {"web_name": "Allrecipes"} and tasks[1].meta == {}
    array = tmp_path / "tasks.json"
    array.write_text(json.dumps([GOOD], indent=2))
    assert load_task_file(array, "mine")[0].start_url == GOOD["web"]


@pytest.mark.parametrize(
    ("lines", "line", "field", "problem"),
    [
        ([record(), record(id="b"), '{"id": "c", "ques": '], 3, None, "not valid JSON"),
        ([record(), record(ques=...)], 2, "ques", "field 'ques' missing"),
        ([record(ques=5)], 1, "ques", "field 'ques' must be a string, got int"),
        ([record(web="www.allrecipes.com")], 1, "web", "must be an http(s) URL"),
        ([record(id="  ")], 1, "id", "must not be empty"),
        ([record(), "[1, 2]"], 2, None, "must be a JSON object, got list"),
        ([record(), record()], 2, "id", "duplicate task id 'mine/a--0' (first at line 1)"),
    ],
)
def test_malformed_jsonl_names_file_line_field(tmp_path, lines, line, field, problem):
    path = jsonl(tmp_path, lines)
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path, "mine")
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert str(error).startswith(f"{path}:{line}:") and problem in str(error)


def test_empty_file(tmp_path):
    path = jsonl(tmp_path, ["", "  "])
    with pytest.raises(TaskFileError, match=r"tasks\.jsonl: contains no tasks"):
        load_task_file(path, "mine")
    with pytest.raises(TaskFileError, match="cannot be read"):
        load_task_file(tmp_path / "absent.jsonl", "mine")


def test_json_array_error_names_element_and_its_line(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "id": "a--1", "ques": None}], indent=2))
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path, "mine")
    assert caught.value.line == 8  # `[`, 6 lines of element 0, then element 1 opens
    assert str(caught.value) == f"{path}:8: field 'ques' must be a string, got null (array element 1)"
    path.write_text('[\n  {"id": 1},\n  oops\n]')
    with pytest.raises(TaskFileError, match=r":3: not valid JSON"):
        load_task_file(path, "mine")


def test_malformed_mind2web_file_names_nested_field(tmp_path, monkeypatch):
    node = {"match_function_name": "url_included_match", "content": {"key": "", "reference_answer": "x.", "url": "https://x.com/"}}
    bad = {**node, "content": {**node["content"], "url": 7}}
    task = {"index": 0, "task": "Do it", "reference_task_length": 3, "evaluation": [node, bad]}
    (tmp_path / "mind2web-live").mkdir()
    (tmp_path / "mind2web-live" / "mind2web-live_test_20241024.json").write_text(json.dumps([task], indent=4))
    monkeypatch.setenv("WEBEVOLVER_DATA_DIR", str(tmp_path))
    with pytest.raises(TaskFileError) as caught:
        live_suites()["mind2web-live"].tasks()
    assert (caught.value.line, caught.value.field) == (2, "evaluation[1].content.url")
    assert "must be a string, got int (array element 0)" in str(caught.value)


# ---- start / begin / evaluate --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "site"),
    [
        ("webvoyager", "https://www.allrecipes.com/"),
        ("gaia-web", "https://www.google.com/"),
        ("openwebvoyager", "https://www.allrecipes.com/"),
        ("mind2web-live", "https://www.gamestop.com/"),
    ],
)
async def test_start_offline_is_a_clear_error(monkeypatch, name, site):
    monkeypatch.setenv("WEBEVOLVER_OFFLINE", "1")

    async def must_not_probe(host: str, port: int) -> bool:
        raise AssertionError("probed the network")

    monkeypatch.setattr(live, "reachable", must_not_probe)
    with pytest.raises(SuiteUnavailable) as caught:
        await live_suites()[name].start()
    message = str(caught.value)
    assert message.startswith(f"{name} needs internet access to live websites ({site});")
    assert "Use the offline suites 'miniwob' or 'sandbox'." in message


async def test_start_probes_once(monkeypatch):
    monkeypatch.delenv("WEBEVOLVER_OFFLINE", raising=False)
    probes: list[tuple[str, int]] = []

    async def fake(host: str, port: int) -> bool:
        probes.append((host, port))
        return len(probes) > 1

    monkeypatch.setattr(live, "reachable", fake)
    suite = live_suites()["webvoyager"]
    with pytest.raises(SuiteUnavailable, match="this machine has none"):
        await suite.start()
    await suite.start()
    await suite.start()
    assert probes == [("www.allrecipes.com", 443)] * 2


async def test_reachable():
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await reachable("127.0.0.1", port)
    assert not await reachable("127.0.0.1", port, timeout=0.5)


async def test_begin_opens_start_url(suites):
    class Page:
        async def goto(self, url: str, **options) -> None:
            self.url = url

    page, task = Page(), suites["webvoyager"].tasks()[5]
    assert await suites["webvoyager"].begin(task, page) is task
    assert page.url == task.start_url
    assert suites["webvoyager"].solver(task) is None


async def test_webvoyager_and_openwebvoyager_leave_scoring_to_the_judge(suites):
    for name in ("webvoyager", "openwebvoyager"):
        task = suites[name].tasks()[0]
        assert await suites[name].evaluate(state(task, answer="anything")) is None


@pytest.mark.parametrize(
    ("answer", "truth", "expected"),
    [
        ("17", "17", True),
        ("17.0", "17", True),
        ("$1,000", "1000", True),
        ("17 thousand hours", "17", False),
        ("18", "17", False),
        ("0.17770", "0.1777", True),
        ("the castle", "THE CASTLE", True),
        ("So we had to let it die", "So we had to let it die.", True),
        ("6:41 pm", "6:41 PM", True),
        ("Braintree;Honolulu", "Braintree, Honolulu", True),
        ("Honolulu, Braintree", "Braintree, Honolulu", False),
        ("Braintree", "Braintree, Honolulu", False),
        ("3.1.3.1; 1.11.1.7", "3.1.3.1; 1.11.1.7", True),
        ("1.0, 2", "1, 2", True),
        ("12", "1, 2", False),
    ],
)
def test_gaia_answer_matching(answer, truth, expected):
    assert gaia_answer_matches(answer, truth) is expected


async def test_gaia_evaluate(suites):
    suite = suites["gaia-web"]
    task = suite.tasks()[0]  # "Final answer": "17"
    assert await suite.evaluate(state(task, answer=" 17 ")) == 1.0
    assert await suite.evaluate(state(task, answer="16")) == 0.0
    assert await suite.evaluate(state(task, answer=None)) == 0.0


# ---- Mind2Web-Live key nodes ---------------------------------------------------------------


def m2w_task(*nodes: KeyNode) -> Task:
    gold = {"key_nodes": [node.__dict__ for node in nodes]}
    return Task("mind2web-live/t", "mind2web-live", "www.shop.com", "https://www.shop.com/", "q", gold=gold)


async def node_score(node: KeyNode, urls=(), events=(), semantic=None) -> float:
    report = await score_key_nodes(m2w_task(node), list(urls), list(events), semantic)
    return report.completion


SHOP = "https://www.shop.com/"


@pytest.mark.parametrize(
    ("node", "urls", "expected"),
    [
        (KeyNode("url_included_match", "shop.", SHOP), [SHOP], 1.0),
        (KeyNode("url_included_match", "/aeroap", SHOP), [SHOP, SHOP + "commercial/aeroapi/"], 1.0),
        (KeyNode("url_included_match", "/AeroAP", SHOP), [SHOP + "commercial/aeroapi/"], 0.0),  # case-sensitive
        (KeyNode("url_included_match", "new york", SHOP, key="q"), [SHOP + "s?q=new%20york+city"], 1.0),
        (KeyNode("url_exactly_match", "2630", SHOP, key="store"), [SHOP + "search/?store=2630"], 1.0),
        (KeyNode("url_exactly_match", "2630", SHOP, key="store"), [SHOP + "search/?store=26301"], 0.0),
        (KeyNode("url_exactly_match", "2630", SHOP, key="store"), [SHOP + "search/?id=2630"], 0.0),
        (KeyNode("url_exactly_match", "MTA:S92", SHOP, key="route"), [SHOP + "a?route=MTA%3AS92"], 1.0),
        (KeyNode("url_exactly_match", "MBTA - Safety", SHOP, key="dep[0]"), [SHOP + "c?dep[0]=MBTA%20-%20Safety"], 1.0),
        (KeyNode("url_exactly_match", SHOP + "a b", SHOP), [SHOP + "a%20b"], 1.0),
        (KeyNode("url_exactly_match", SHOP + "a", SHOP), [SHOP + "a/"], 0.0),
    ],
)
async def test_url_nodes(node, urls, expected):
    assert await node_score(node, urls=urls) == expected


async def test_url_of_an_action_counts_as_visited():
    node = KeyNode("url_exactly_match", "7", SHOP, key="p")
    assert await node_score(node, events=[ActionEvent(SHOP + "?p=7", "#b", "Go")]) == 1.0


REF = ".ipc-starbar__touch >span:nth-child(2)"


def node(function: str, reference: str, **content: str) -> KeyNode:
    return KeyNode(f"element_{function}_match", reference, SHOP, **{"netloc": "shop", **content})


def event(path: str, value: str = "", url: str = SHOP, hits: tuple[str, ...] = ()) -> ActionEvent:
    return ActionEvent(url, path, value, matched_selectors=frozenset(hits))


@pytest.mark.parametrize(
    ("key_node", "action", "expected"),
    [
        # The env resolved the reference on the live page: it names the element acted on.
        (node("path_exactly", REF), event("html > body > button", hits=(REF,)), 1.0),
        # Without resolution the recorded selector must equal the reference, spacing aside.
        (node("path_exactly", REF + " "), event(".ipc-starbar__touch > span:nth-child(2)"), 1.0),
        (node("path_exactly", REF), event("html > body > button"), 0.0),
        (node("path_exactly", REF, netloc="other"), event(REF, hits=(REF,)), 0.0),
        (node("path_included", "span:nth-child(2)"), event("div > " + REF), 1.0),
        (node("path_included", "span:nth-child(3)"), event(REF), 0.0),
        (node("value_exactly", "Johm", path="#name "), event("#name", "Johm"), 1.0),
        (node("value_exactly", "Johm", path="#name "), event("#email", "Johm"), 0.0),
        (node("value_exactly", "Johm", path="#name "), event("#name", "John"), 0.0),
        (node("value_exactly", "100"), event("#amount", "100", SHOP + "gift"), 1.0),
        (node("value_exactly", "100"), event("#amount", "100", "https://shop.org/"), 1.0),  # same label
        (node("value_exactly", "100"), event("#amount", "100", "https://www.other.com/"), 0.0),
        (node("value_included", "test.com", path="#email"), event("div > p", "abc@test.com", hits=("#email",)), 1.0),
        (node("value_included", "test.org", path="#email"), event("#email", "abc@test.com"), 0.0),
    ],
)
async def test_element_nodes(key_node, action, expected):
    assert await node_score(key_node, events=[action]) == expected


async def test_semantic_nodes_need_an_llm():
    url_node = KeyNode("url_semantic_match", "Decide whether are searching for wireless headphones", SHOP, key="k")
    value_node = node("value_semantic", "Decide whether is searching for las vegas", path="#origin")
    urls, events = [SHOP + "s?k=wireless+headphones"], [event("#origin", "Las Vegas")]
    offline = await score_key_nodes(m2w_task(url_node, value_node), urls, events)
    assert offline.completion == 0.0 and offline.not_evaluable == 2 and not offline.task_success

    seen: list[tuple[str, str]] = []

    async def judge(text: str, instruction: str) -> float:
        seen.append((text, instruction))
        return 1.0 if "head" in text.lower() else 0.4

    judged = await score_key_nodes(m2w_task(url_node, value_node), urls, events, judge)
    assert [r.score for r in judged.results] == [1.0, 0.4] and judged.not_evaluable == 0
    assert seen[0] == ("wireless headphones", url_node.reference) and seen[1][0] == "Las Vegas"


async def test_completion_and_success_on_a_real_task(suites):
    suite, task = suites["mind2web-live"], suites["mind2web-live"].tasks()[0]
    assert await suite.evaluate(state(task, urls=["https://www.gamestop.com/"])) == 0.5
    done = ["https://www.gamestop.com/", "https://www.gamestop.com/stores/?store=2630"]
    report = await score_key_nodes(task, done, [])
    assert report.completion == 1.0 and report.task_success
    assert await suite.evaluate(state(task, urls=done)) == 1.0
    plain = EpisodeState(task=task, answer=None, urls=[], observations=[], page=None)  # no `events` yet
    assert await suite.evaluate(plain) == 0.0


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("https://www.imdb.com/title/x", "imdb"),
        ("https://industry.flightaware.com/airports", "industry"),
        ("https://new.mta.info/", "new"),
        ("https://spothero.com/", "spothero"),
        ("http://localhost:8000/", ""),
    ],
)
def test_webcanvas_netloc(url, label):
    assert webcanvas_netloc(url) == label


# ---- the navigation allowlist ----------------------------------------------------------------


def test_allowlist_convention():
    assert registrable_domain("dictionary.cambridge.org") == "cambridge.org"
    assert registrable_domain("news.bbc.co.uk") == "bbc.co.uk"
    assert registrable_domain("127.0.0.1") == "127.0.0.1"
    assert allowed_hosts("https://www.google.com/") == ("*",)
    assert allowed_hosts("https://www.google.com/travel/flights/") == ("google.com", "*.google.com")
    hosts = allowed_hosts("https://www.allrecipes.com/")
    assert host_allowed("www.allrecipes.com", hosts) and host_allowed("allrecipes.com", hosts)
    assert not host_allowed("evil-allrecipes.com", hosts) and not host_allowed("allrecipes.com.evil.net", hosts)
    assert host_allowed("anything.example", ("*",))
