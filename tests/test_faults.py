"""The fault suite (issue 11): hostile pages, dead browsers, silent endpoints, killed parents.

Real parts only: Debian chromium through the project's launcher; two local HTTP servers, A
(the task's site) and B (not allowed; it records every request it gets and would answer with
content the observation must never show); model endpoints that hang, answer garbage or a
megabyte; processes killed with real signals. The only time bounds asserted are the feature
itself, and generous ("gives up in under 30 s when the limits say 3 s").
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cli.doctor import run_checks
from evolver_core.browser.env import MAX_ERROR_CHARS, BrowserCrashed, BrowserSession, EnvConfig, launch_browser
from evolver_core.llm import CallLimits, LLMClient, LLMError, use_limits
from evolver_core.contracts.agent import Turn
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.task import EpisodeState, Task, TaskFileError
from evolver_core.data.lock import RunLock, RunLocked, hold_run
from evolver_core.data.storage import Storage
from evolver_core.sampling.rollout import run_episode
from evolver_core.suites.httpserver import LocalHTTPServer
from evolver_core.suites.taskfile import load_task_file
from evolver_core.models.refs import ModelRef
from fixtures_models import chat_response, gone
from infra.model_server import TransformersServer, VLLMServer
from infra.prefect_server import PrefectServer, watch_server
from infra.process import SERVICE_OWNER_ENV, service_env, start_service, stop_strays, stray_services
from s3_server import LocalS3Server

ROOT = Path(__file__).resolve().parent.parent
SECRET = "B-SECRET-CONTENT"  # what B serves; it must never reach an observation
HELLO = [{"role": "user", "content": "hello"}]


# ---- two sites ----------------------------------------------------------------------------


class Site:
    """A local HTTP server answering `pages` (path -> (status, headers, body)); every other path
    gets a page (or script) with SECRET. Records the paths it was asked for."""

    def __init__(self, pages: dict[str, tuple[int, dict[str, str], str]] | None = None):
        self.pages = pages or {}
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                site.hits.append(self.path)
                status, headers, body = site.pages.get(self.path, site.default(self.path))
                data = body.encode()
                self.send_response(status)
                for name, value in {"Access-Control-Allow-Origin": "*", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = LocalHTTPServer(Handler)
        self.url = self.server.url

    @staticmethod
    def default(path: str) -> tuple[int, dict[str, str], str]:
        if path.endswith(".js"):
            return 200, {"Content-Type": "text/javascript"}, f"document.body.append('{SECRET}');"
        return 200, {"Content-Type": "text/html"}, f"<title>B</title><p>{SECRET}</p>"


def html(title: str, body: str) -> tuple[int, dict[str, str], str]:
    return 200, {"Content-Type": "text/html"}, f"<!doctype html><title>{title}</title><h1>{title}</h1>{body}"


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[Site, Site]]:
    b = Site()
    a = Site()
    out = '<p id="out">nothing yet</p>'
    a.pages.update({
        "/start": html("Start", f'<a href="{b.url}elsewhere">Other port</a><input aria-label="Box">'),
        "/second": html("Second", "<p>second page</p>"),
        "/hop-link": html("Hop", '<a href="/hop">Through a redirect</a>'),
        "/hop": (302, {"Location": f"{b.url}landed"}, ""),
        "/js-link": html("JS link", f"<a href=\"javascript:fetch('{b.url}js').then(r => r.text())"
                                    f".then(t => document.getElementById('out').textContent = t)\">Run</a>"
                                    f'<a href="javascript:void(0)" onclick="document.getElementById(\'out\')'
                                    f'.textContent = \'handler ran\'">Placeholder</a>{out}'),
        "/script": html("Script", f'<script src="{b.url}evil.js"></script>'),
        "/fetch": html("Fetch", f"<button onclick=\"fetch('{b.url}data').then(r => r.text())"
                                f".then(t => document.getElementById('out').textContent = t)\">Fetch</button>{out}"),
        "/iframe": html("Frame", f'<iframe src="{b.url}frame" title="framed"></iframe>'),
        "/popup": html("Popup", f"<button onclick=\"window.open('{b.url}popup')\">Open B</button>"
                                "<button onclick=\"window.open('/second')\">Open A</button>"),
        "/meta": html("Meta", f'<meta http-equiv="refresh" content="0;url={b.url}meta"><p>meta page</p>'),
        "/jsnav": html("JS nav", f"<script>location.href = '{b.url}jsnav';</script><p>js nav page</p>"),
    })
    yield a, b
    a.server.close()
    b.server.close()


class SiteSuite:
    """Opens a task's start URL; nothing to evaluate."""

    name = "faults"

    async def begin(self, task: Task, page) -> Task:
        await page.goto(task.start_url)
        return task

    async def evaluate(self, state: EpisodeState) -> None:
        return None


def task_at(url: str, tmp_path: Path) -> Task:
    """A WebVoyager-format task file for `url`, read as users' files are: the allowlist is the
    one the project derives."""
    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps({"id": "t", "ques": "look around", "web": url}) + "\n")
    return load_task_file(path, "faults")[0]


@pytest.fixture
def fresh_b(sites: tuple[Site, Site]) -> Site:
    sites[1].hits.clear()
    return sites[1]


def el(obs, role: str, name: str) -> int:
    found = obs.first(role, name)
    assert found is not None, f"{role} {name!r} missing from\n{obs.text}"
    return found.id


async def start(browser: BrowserSession, a: Site, path: str, tmp_path: Path, config: EnvConfig | None = None):
    env = await browser.new_env(SiteSuite(), config)
    obs = await env.reset(task_at(a.url + path.lstrip("/"), tmp_path))
    return env, obs


# ---- the allowlist on every request ------------------------------------------------------


async def test_local_allowlist_names_the_port(sites, fresh_b, tmp_path):
    a, _ = sites
    task = task_at(a.url + "start", tmp_path)
    assert task.allowed_hosts == (a.server.netloc,)  # not every port of 127.0.0.1
    async with launch_browser() as browser:
        env, obs = await start(browser, a, "/start", tmp_path)
        obs = await env.step(f"click [{el(obs, 'link', 'Other port')}]")
    assert obs.url == a.url + "start" and "refused" in obs.error and a.server.netloc in obs.error
    assert fresh_b.hits == []


async def test_redirect_to_another_host_is_refused(sites, fresh_b, tmp_path):
    a, _ = sites
    async with launch_browser() as browser:
        env, obs = await start(browser, a, "/hop-link", tmp_path)
        obs = await env.step(f"click [{el(obs, 'link', 'Through a redirect')}]")
    assert fresh_b.hits == [], "the redirect hop reached B"
    assert "refused" in obs.error and "landed" in obs.error
    assert obs.url.startswith(a.url) and SECRET not in obs.text


async def test_javascript_link_is_not_followed(sites, fresh_b, tmp_path):
    a, _ = sites
    async with launch_browser() as browser:
        env, obs = await start(browser, a, "/js-link", tmp_path)
        obs = await env.step(f"click [{el(obs, 'link', 'Run')}]")
        assert "javascript:" in obs.error and "not followed" in obs.error
        assert SECRET not in obs.text and obs.first("StaticText", "nothing yet") is not None
        obs = await env.step(f"click [{el(obs, 'link', 'Placeholder')}]")  # javascript:void(0): its handler runs
        assert obs.error is None and obs.first("StaticText", "handler ran") is not None
    assert fresh_b.hits == []


async def test_script_from_another_host_is_refused(sites, fresh_b, tmp_path):
    a, b = sites
    async with launch_browser() as browser:
        _, obs = await start(browser, a, "/script", tmp_path)
    assert fresh_b.hits == [] and SECRET not in obs.text
    assert f"{b.url}evil.js" in obs.error and "refused" in obs.error  # the agent is told


async def test_fetch_to_another_host_is_refused(sites, fresh_b, tmp_path):
    a, b = sites
    async with launch_browser() as browser:
        env, obs = await start(browser, a, "/fetch", tmp_path)
        obs = await env.step(f"click [{el(obs, 'button', 'Fetch')}]")
    assert fresh_b.hits == [] and SECRET not in obs.text
    assert f"{b.url}data" in obs.error and "refused" in obs.error


async def test_iframe_from_another_host_is_refused(sites, fresh_b, tmp_path):
    a, b = sites
    async with launch_browser() as browser:
        _, obs = await start(browser, a, "/iframe", tmp_path)
    assert fresh_b.hits == [] and SECRET not in obs.text
    assert f"a frame from {b.url}frame was refused" in obs.error


async def test_window_open_popups(sites, fresh_b, tmp_path):
    a, b = sites
    async with launch_browser() as browser:
        env, obs = await start(browser, a, "/popup", tmp_path)
        obs = await env.step(f"click [{el(obs, 'button', 'Open B')}]")  # must not raise
        assert f"a new tab for {b.url}popup was refused and closed" in obs.error
        assert len(obs.tabs) == 1 and len(env.context.pages) == 1 and obs.url == a.url + "popup"
        obs = await env.step(f"click [{el(obs, 'button', 'Open A')}]")  # an allowed tab becomes current
        assert obs.error is None and len(obs.tabs) == 2 and obs.url == a.url + "second"
    assert fresh_b.hits == []


@pytest.mark.parametrize("path", ["/meta", "/jsnav"])
async def test_navigation_on_load_is_refused_and_told(sites, fresh_b, tmp_path, path):
    a, b = sites
    async with launch_browser() as browser:
        _, obs = await start(browser, a, path, tmp_path)
    assert fresh_b.hits == [] and SECRET not in obs.text
    assert f"navigation to {b.url}{path[1:]} was refused" in obs.error  # the first observation says so
    assert not obs.url.startswith(b.url)


async def test_long_type_error_is_capped(sites, tmp_path):
    a, _ = sites
    text = "x" * 10_000
    async with launch_browser() as browser:
        env, obs = await start(browser, a, "/start", tmp_path, EnvConfig(action_timeout_s=0.2))
        obs = await env.step(f"type [{el(obs, 'textbox', 'Box')}] [{text}]")
    assert "timed out" in obs.error and "[cut " in obs.error
    assert len(obs.error) <= MAX_ERROR_CHARS + len("…[cut 100000 chars]") and "x" * 500 not in obs.error


# ---- a page that never answers ------------------------------------------------------------


class ClickThenStop:
    """Clicks the button named `button` on the first step, then stops."""

    name = "click-then-stop"

    def __init__(self, button: str):
        self.button = button

    def start(self, task: Task) -> None:
        pass

    async def act(self, task: Task, obs: Observation, history: list) -> Turn:
        found = obs.first("button", self.button)
        return Turn(thought="", action=f"click [{found.id}]" if found and not history else "stop [done]",
                    model="scripted")


async def test_a_page_that_loops_forever_costs_the_step_deadline_not_the_episodes(sites, tmp_path):
    a, _ = sites
    a.pages.update({
        "/hang-on-load": html("Hangs on load", "<script>while (true) {}</script>"),
        "/hang-on-click": html("Hangs on click", '<button onclick="while (true) {}">Go</button>'),
        "/calm": html("Calm", "<button onclick=\"this.textContent = 'Went'\">Go</button>"),
    })
    agent = ClickThenStop("Go")
    with use_limits(CallLimits(step_deadline_s=5, episode_deadline_s=120)):
        async with launch_browser() as browser:
            env = await browser.new_env(SiteSuite())  # one env for every episode, as a sampling worker
            for path, steps in (("hang-on-load", 0), ("hang-on-click", 1)):  # reset hangs; the click's step hangs
                t0 = time.monotonic()
                ep = await run_episode(env, task_at(a.url + path, tmp_path), agent)
                assert time.monotonic() - t0 < 60, "the hung page cost the episode deadline"
                assert ep.stop_reason == "error" and "the page did not answer within 5 s" in ep.error, ep.error
                assert [step.action.name for step in ep.steps] == ["click"] * steps
            ep = await run_episode(env, task_at(a.url + "calm", tmp_path), agent)
    assert ep.error is None and ep.stop_reason == "stop" and ep.final_answer == "done"
    assert "Went" in ep.steps[1].observation


async def test_a_replay_on_a_page_that_hangs_ends_at_the_step_deadline(sites, tmp_path):
    """The replay filter plays a synthetic trajectory's actions on the real page: a page whose
    click never returns costs it the step deadline, then `PageHung`."""
    from dataclasses import replace

    from evolver_core.browser.env import PageHung
    from evolver_core.world_model.replay import replay_reward

    a, _ = sites
    a.pages.update({"/hang-on-click": html("Hangs on click", '<button onclick="while (true) {}">Go</button>'),
                    "/calm": html("Calm", "<button onclick=\"this.textContent = 'Went'\">Go</button>")})
    with use_limits(CallLimits(step_deadline_s=5, episode_deadline_s=120)):
        async with launch_browser() as browser:
            env = await browser.new_env(SiteSuite())
            played = await run_episode(env, task_at(a.url + "calm", tmp_path), ClickThenStop("Go"))
            assert [s.action.name for s in played.steps] == ["click", "stop"]
            t0 = time.monotonic()
            with pytest.raises(PageHung):
                await replay_reward(env, replace(played, task=task_at(a.url + "hang-on-click", tmp_path)))
            assert time.monotonic() - t0 < 60


# ---- a dying browser -------------------------------------------------------------------------


async def chromium_pid(browser: BrowserSession) -> int:
    cdp = await browser.browser.new_browser_cdp_session()
    info = await cdp.send("SystemInfo.getProcessInfo")
    await cdp.detach()
    return next(p["id"] for p in info["processInfo"] if p["type"] == "browser")


async def test_killed_chromium_is_relaunched(sites, tmp_path):
    a, _ = sites
    task = task_at(a.url + "start", tmp_path)
    async with launch_browser() as browser:
        env, other = await browser.new_env(SiteSuite()), await browser.new_env(SiteSuite())
        await env.reset(task)
        await other.reset(task)
        pid = await chromium_pid(browser)
        in_flight = asyncio.ensure_future(env.step("wait"))
        await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrowserCrashed, match="the next reset"):
            await in_flight
        with pytest.raises(BrowserCrashed):  # another episode of the same browser: lost too
            await other.step("scroll [down]")
        obs = await env.reset(task)  # the next episodes go on, in a new chromium
        assert obs.error is None and obs.first("link", "Other port") is not None
        assert (await other.reset(task)).url == task.start_url
        assert (await (await browser.new_env(SiteSuite())).reset(task)).url == task.start_url
        assert await chromium_pid(browser) != pid


# ---- model endpoints that misbehave ------------------------------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    listener.close()
    for conn in held:
        conn.close()


def test_default_limits_bound_a_dead_endpoint_to_about_a_minute():
    limits = CallLimits()
    assert limits.step_deadline_s <= 60 and limits.request_timeout_s <= limits.step_deadline_s


@pytest.mark.parametrize("limits, says", [
    (CallLimits(request_timeout_s=1, max_retries=30, step_deadline_s=3), "no reply within the deadline of 3 s"),
    (CallLimits(request_timeout_s=1, max_retries=1, step_deadline_s=600), "after 2 attempt(s): APITimeoutError"),
])
async def test_silent_endpoint_costs_a_bounded_time(silent_endpoint, limits, says):
    client = LLMClient(silent_endpoint, "silent-model", api_key="sk-planted-never-shown", limits=limits)
    t0 = time.monotonic()
    with pytest.raises(LLMError) as info:
        await client.chat(HELLO)
    assert time.monotonic() - t0 < 30
    message = str(info.value)
    assert silent_endpoint in message and "'silent-model'" in message and says in message
    assert "sk-planted" not in message


class ScriptedEndpoint:
    """An OpenAI-style endpoint answering every request with one (status, content type, body)."""

    def __init__(self, status: int, content_type: str, body: str):
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.requests += 1
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = LocalHTTPServer(Handler)
        self.base_url = self.server.url + "v1"


@pytest.mark.parametrize("status, content_type, body, says", [
    (200, "text/html", "<html>a proxy's login page</html>", "not a chat completion"),
    (200, "application/json", '{"choices": [', "invalid JSON"),
    (200, "application/json", '{"detail": "ok"}', "not a chat completion"),
    (503, "application/json", '{"error": "overloaded"}', "HTTP 503"),
])
async def test_bad_replies_are_retried_then_reported(status, content_type, body, says):
    endpoint = ScriptedEndpoint(status, content_type, body)
    try:
        client = LLMClient(endpoint.base_url, "garbled", limits=CallLimits(max_retries=2))
        with pytest.raises(LLMError) as info:
            await client.chat(HELLO)
    finally:
        endpoint.server.close()
    message = str(info.value)
    assert endpoint.requests == 3 and "after 3 attempt(s)" in message and says in message
    assert endpoint.base_url in message and "'garbled'" in message


async def test_a_megabyte_reply_is_capped():
    endpoint = ScriptedEndpoint(200, "application/json", json.dumps(chat_response("y" * 1_000_000)))
    try:
        reply = await LLMClient(endpoint.base_url, "verbose").chat(HELLO)
    finally:
        endpoint.server.close()
    limit = CallLimits().max_reply_chars
    assert reply.text == "y" * limit + f"…[cut {1_000_000 - limit} chars]"


# ---- child processes -----------------------------------------------------------------------

_PARENT = """
import sys, time
from infra.process import service_env, start_service
child = start_service([sys.executable, "-c", "import time; time.sleep(600)"], log=open(sys.argv[1], "wb"),
                      env=service_env())
print(child.pid, flush=True)
time.sleep(600)
"""


def test_child_service_dies_with_a_killed_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path / "child.log")], cwd=ROOT,
                              env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              start_new_session=True)
    child = int(parent.stdout.readline())
    try:
        assert not gone(child)
        parent.kill()  # SIGKILL: no atexit, no cleanup of any kind
        parent.wait()
        deadline = time.monotonic() + 10
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(child), "the service outlived its killed parent"
    finally:
        parent.stdout.close()
        if not gone(child):
            os.killpg(child, signal.SIGKILL)


def test_strays_are_listed_by_doctor_and_can_be_stopped(tmp_path, capsys):
    dead_owner = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                text=True, check=True).stdout.strip()
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                             env=os.environ | {SERVICE_OWNER_ENV: f"{dead_owner}:1"})
    try:
        deadline = time.monotonic() + 10
        while not (mine := [s for s in stray_services() if s.pid == stray.pid]) and time.monotonic() < deadline:
            time.sleep(0.1)  # the marker shows in /proc once the interpreter has started
        assert mine and mine[0].pgid == stray.pid
        run_checks(str(tmp_path))
        out = capsys.readouterr().out
        assert f"pid {stray.pid}:" in out and "webevolver doctor --stop-strays" in out
        stop_strays(mine)  # only ours: other processes on this machine are not this test's
        assert stray.wait(10) == -signal.SIGTERM
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


def test_services_get_a_scrubbed_environment(tmp_path, monkeypatch):
    planted = {"OPENAI_API_KEY": "sk-planted", "AWS_SECRET_ACCESS_KEY": "aws-planted", "HF_TOKEN": "hf-planted",
               "WEBEVOLVER_DB_PASSWORD": "pw-planted", "GITHUB_TOKEN": "gh-planted"}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEBEVOLVER_HOME", str(tmp_path))
    log = tmp_path / "env.log"
    with log.open("wb") as out:
        child = start_service([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                              log=out, env=service_env({"HF_HUB_OFFLINE": "1"}))
        assert child.wait(30) == 0
    seen = json.loads(log.read_text())
    assert not set(planted) & set(seen) and "planted" not in log.read_text()
    assert seen["HF_HUB_OFFLINE"] == "1" and seen["WEBEVOLVER_HOME"] == str(tmp_path) and "PATH" in seen
    assert seen[SERVICE_OWNER_ENV].startswith(f"{os.getpid()}:")
    # The model servers build their environment the same way.
    for server in (TransformersServer(ModelRef(str(tmp_path))), VLLMServer(ModelRef("org/model"))):
        env = server.env()
        assert not set(planted) & set(env) and env["HF_HUB_OFFLINE"] == "1"


# ---- one run, one owner (issue 22) ---------------------------------------------------------

_HOLDER = """
import sys, time
from evolver_core.data.lock import hold_run
from evolver_core.data.storage import Storage
with hold_run(Storage(sys.argv[1]), sys.argv[2], flow_run_id="flow-run-of-the-holder", heartbeat_s=0.5):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3Server]:
    with LocalS3Server() as server:
        yield server


@pytest.fixture(params=["file", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A storage root on the local disk, or on the test S3 server (its variables set here)."""
    if request.param == "file":
        return str(tmp_path / "store")
    server: LocalS3Server = request.getfixturevalue("s3")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    return f"{server.create_bucket(f'faults-{uuid.uuid4().hex[:12]}')}/store"


@contextmanager
def holder_process(root: str, run_id: str) -> Iterator[subprocess.Popen]:
    """Another process holding `run_id` (until the block ends or the test kills it)."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, root, run_id], cwd=ROOT, stdout=subprocess.PIPE,
                              env=os.environ | {"PYTHONPATH": str(ROOT)}, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_live_holder_refuses_a_second_run_at_once(root):
    store = Storage(root)
    with holder_process(root, "shared") as holder:
        t0 = time.monotonic()
        with pytest.raises(RunLocked) as refused:
            with hold_run(store, "shared"):
                pass
        assert time.monotonic() - t0 < 10
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "flow run flow-run-of-the-holder" in message and "since " in message
        with hold_run(store, "another-run"):  # other runs are free
            pass


def test_a_killed_holder_is_taken_over(root, caplog):
    store = Storage(root)
    with holder_process(root, "shared") as holder:
        holder.kill()  # SIGKILL: the lock object stays behind
        holder.wait()
        with caplog.at_level(logging.WARNING, "evolver_core.data.lock"), hold_run(store, "shared") as lock:
            assert lock.took_over is not None and lock.took_over.pid == holder.pid
            assert lock.read().pid == os.getpid()
    assert f"took over its lock from pid {holder.pid}" in caplog.text and "is gone" in caplog.text
    assert RunLock(store, "shared").read() is None  # released


def test_a_holder_on_another_host_is_dead_only_after_its_heartbeat_stops(root):
    store = Storage(root)
    lock = RunLock(store, "shared", stale_s=60)
    elsewhere = {"host": "another-machine", "pid": 1, "pid_started": None, "flow_run_id": None,
                 "since": "2026-01-01T00:00:00+00:00", "token": "theirs"}
    store.write_file(lock.path, json.dumps({**elsewhere, "heartbeat": time.time()}).encode())
    with pytest.raises(RunLocked, match="pid 1 on host another-machine"):
        lock.acquire()
    store.write_file(lock.path, json.dumps({**elsewhere, "heartbeat": time.time() - 120}).encode())
    with hold_run(store, "shared", stale_s=60) as taken:
        assert taken.took_over.host == "another-machine"


def test_a_held_lock_is_heartbeated(tmp_path):
    store = Storage(str(tmp_path))
    with hold_run(store, "r", heartbeat_s=0.2) as lock:
        first = lock.read().heartbeat
        time.sleep(1)
        assert lock.read().heartbeat > first and lock.lost is None


# ---- the real command: refusals and errors a person can act on (issue 22) -----------------


def webevolver(*args: str, home: Path, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """The installed `webevolver` command, as a user runs it (its own WEBEVOLVER_HOME)."""
    return subprocess.run([str(Path(sys.executable).parent / "webevolver"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s, env=os.environ | {"WEBEVOLVER_HOME": str(home)})


def traceback_lines(text: str) -> int:
    return sum(line.startswith("Traceback") or line.lstrip().startswith('File "') for line in text.splitlines())


def test_evolve_on_a_held_run_is_refused_naming_the_holder(prefect_server, tmp_path):
    root = str(tmp_path / "store")
    with holder_process(root, "shared") as holder:
        done = webevolver("evolve", "--run", "shared", "--storage", root, home=tmp_path / "home", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"run 'shared' is in use by pid {holder.pid} on host {socket.gethostname()}" in done.stderr
    assert "flow run flow-run-of-the-holder" in done.stderr and "traceback: " in done.stderr
    assert traceback_lines(done.stderr + done.stdout) == 0
    assert not (tmp_path / "store" / "runs" / "shared" / "round=0").exists()  # no stage started


def test_evolve_refuses_a_held_run_before_any_prefect_call(tmp_path):
    """The command checks the lock before it reaches a Prefect server or creates a flow run:
    with the API pointing at a port where nothing listens, the refusal still names the holder."""
    root = str(tmp_path / "store")
    unreachable = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    with holder_process(root, "shared") as holder, pytest.MonkeyPatch.context() as env:
        for name, value in unreachable.items():
            env.setenv(name, value)
        done = webevolver("evolve", "--run", "shared", "--storage", root, home=tmp_path / "home", cwd=tmp_path,
                          timeout_s=120)
    assert done.returncode == 1, done.stderr
    assert f"run 'shared' is in use by pid {holder.pid}" in done.stderr
    assert "Prefect server" not in done.stderr and traceback_lines(done.stderr + done.stdout) == 0


def test_a_flow_joining_a_commands_hold_names_its_flow_run(tmp_path):
    store = Storage(str(tmp_path))
    with hold_run(store, "r") as command_hold:
        assert command_hold.read().flow_run_id is None
        with hold_run(store, "r", flow_run_id="the-flow-run") as joined:
            assert joined is command_hold and command_hold.read().flow_run_id == "the-flow-run"
        with hold_run(store, "r", flow_run_id="a-nested-round"):  # the first flow run stays named
            assert command_hold.read().flow_run_id == "the-flow-run"
    assert RunLock(store, "r").read() is None


@pytest.mark.parametrize("storage, says", [("s3:/bucket/x", "two slashes"), ("gs://bucket/x", "unknown scheme")])
def test_a_malformed_storage_root_is_refused_before_anything_runs(tmp_path, storage, says):
    work = tmp_path / "work"
    work.mkdir()
    done = webevolver("evolve", "--storage", storage, home=tmp_path / "home", cwd=work, timeout_s=60)
    assert done.returncode == 2 and says in done.stderr and "--storage" in done.stderr
    assert list(work.iterdir()) == [], "written to a local folder named like the URI"


def test_a_malformed_task_file_is_one_line_and_the_traceback_is_logged(tmp_path, monkeypatch):
    data = tmp_path / "data" / "webvoyager"
    data.mkdir(parents=True)
    for name in ("GAIA_web.jsonl", "reference_answer.json"):
        (data / name).write_text((ROOT / "data" / "tasks" / "webvoyager" / name).read_text())
    (data / "WebVoyager_data.jsonl").write_text('{"id": "x", "ques": \n')
    monkeypatch.setenv("WEBEVOLVER_DATA_DIR", str(tmp_path / "data"))
    command = ["sample", "--suite", "webvoyager", "--tasks", "1", "--storage", str(tmp_path / "store")]
    done = webevolver(*command, home=tmp_path / "home", cwd=tmp_path, timeout_s=120)
    debug = webevolver("--debug", *command, home=tmp_path / "home", cwd=tmp_path, timeout_s=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 2, done.stderr
    assert lines[0].startswith(f"webevolver: {data / 'WebVoyager_data.jsonl'}:1: not valid JSON")
    assert "fix the file" in lines[0]
    log = Path(lines[1].split("traceback: ")[1].split(" ")[0])
    assert log.parent == tmp_path / "home" / "logs" and "TaskFileError" in log.read_text()
    assert debug.returncode == 1 and traceback_lines(debug.stderr) > 0 and "TaskFileError" in debug.stderr


def test_an_error_a_person_sees_is_printed_as_its_message_wherever_it_is_in_the_chain():
    from cli.errors import summary
    from evolver_core.browser.launch import PageTimeout
    from evolver_core.contracts.errors import WebEvolverError
    from evolver_core.data.storage import StorageURIError
    from infra.prefect_server import PrefectServerError

    wrapped = RuntimeError("Task run 'sample-r0' failed")  # as Prefect re-raises a task's error
    wrapped.__cause__ = PrefectServerError("the Prefect server is not running")
    assert summary(wrapped) == "the Prefect server is not running"
    bad_file = TaskFileError("tasks.jsonl", 3, "query", "is missing")
    assert summary(bad_file) == "tasks.jsonl:3: field 'query' is missing; fix the file, then rerun the same command"
    assert summary(ValueError("no such thing\nsecond line")) == "failed: ValueError: no such thing"
    # Each keeps the built-in class that code catches it by.
    assert isinstance(bad_file, ValueError) and isinstance(PageTimeout("slow"), TimeoutError)
    assert all(issubclass(e, WebEvolverError) for e in (TaskFileError, StorageURIError, RunLocked, LLMError))


def test_a_corrupt_adapter_is_named_in_one_line(prefect_server, tmp_path, tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    adapter = tmp_path / "policy"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                   LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])  # truncated: a full disk, a killed copy
    done = webevolver("eval", "--policy", str(adapter), "--suite", "miniwob", "--tasks", "1", "--storage",
                      str(tmp_path / "store"), home=tmp_path / "home", cwd=tmp_path)
    assert done.returncode == 1
    assert f"webevolver: the adapter {adapter} cannot be loaded (SafetensorError" in done.stderr, done.stderr
    assert "remove that folder" in done.stderr and traceback_lines(done.stderr + done.stdout) == 0
    bare = [m for m in (tmp_path / "store").rglob("identity.json") if len(list(m.parent.iterdir())) == 1]
    assert not bare, bare  # the eval stage that failed before storing anything left no manifest


def test_a_lost_prefect_server_is_noticed_within_seconds():
    server = Site({"/api/health": (200, {"Content-Type": "application/json"}, "true")})
    lost = threading.Event()
    stop = watch_server(server.url + "api", lost.set, lost_after_s=1.0, interval_s=0.2)
    try:
        assert not lost.wait(2), "a healthy server was reported lost"
        server.server.close()
        t0 = time.monotonic()
        assert lost.wait(10) and time.monotonic() - t0 < 5
    finally:
        stop.set()


def test_observe_of_a_page_that_loops_forever_ends_at_its_deadline(sites, tmp_path):
    a, _ = sites
    a.pages["/loop"] = html("Loop", "<script>while (true) {}</script><p>never shown</p>")
    t0 = time.monotonic()
    done = webevolver("observe", a.url + "loop", "--deadline", "5", home=tmp_path / "home", cwd=tmp_path,
                      timeout_s=120)
    assert done.returncode == 1 and time.monotonic() - t0 < 60
    assert f"webevolver: {a.url}loop was not observed within 5 s" in done.stderr, done.stderr


def test_a_server_lost_mid_run_ends_the_command_in_one_line(tmp_path):
    store = tmp_path / "store"
    with PrefectServer(tmp_path / "prefect") as server:
        command = subprocess.Popen(
            [str(Path(sys.executable).parent / "webevolver"), "evolve", "--run", "lost", "--storage", str(store)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=os.environ | server.env | {"WEBEVOLVER_HOME": str(tmp_path / "home")})
        try:
            # The command holds the run before it reaches Prefect; its flow run, once started,
            # joins the hold and names itself on the lock.
            lock = RunLock(Storage(str(store)), "lost")
            deadline = time.monotonic() + 240
            while command.poll() is None and time.monotonic() < deadline and \
                    not (lock.read() and lock.read().flow_run_id):
                time.sleep(0.2)
            assert lock.read() and lock.read().flow_run_id, "the flow never started"
            server.stop()
            t0 = time.monotonic()
            out, err = command.communicate(timeout=60)
        finally:
            if command.poll() is None:
                command.kill()
                command.communicate()
    assert command.returncode == 3 and time.monotonic() - t0 < 30
    assert f"the Prefect server at {server.ui_url} stopped; rerun the same command to resume" in err
    assert (out + err).count("ConnectError") < 10


def test_the_flow_run_of_a_dead_holder_is_marked_crashed(prefect_server, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Running

    from flows.holding import holding_run

    @flow(name="killed-with-9")
    def killed() -> None:
        pass

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(killed, state=Running())
        dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True, check=True).stdout)
        store = Storage(str(tmp_path))
        store.write_file(RunLock(store, "r").path, json.dumps({
            "host": socket.gethostname(), "pid": dead, "pid_started": None, "flow_run_id": str(run.id),
            "since": "2026-01-01T00:00:00+00:00", "heartbeat": time.time(), "token": "dead"}).encode())
        with holding_run("r", str(tmp_path)) as lock:
            assert lock.took_over.pid == dead
        state = client.read_flow_run(run.id).state
    assert state.type == StateType.CRASHED and "is gone" in state.message
