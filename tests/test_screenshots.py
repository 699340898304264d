"""Per-step screenshots of real rollouts: stored beside the trajectories (file:// and S3), named in
the step rows, never failing an episode, and shown by the static viewer from its own folder."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image
from playwright.async_api import async_playwright

from evolver_core.agents.oracle import OracleAgent
from evolver_core.browser.env import EnvConfig, launch_browser
from evolver_core.browser.launch import CHROMIUM_ARGS, chromium_path
from evolver_core.data.records import from_table, to_table
from evolver_core.data.storage import Storage
from evolver_core.reporting.viewer import copy_screenshots, render_report
from evolver_core.sampling.sampler import SampleConfig, sample_trajectories
from evolver_core.suites.miniwob import MiniWoBSuite
from s3_server import LocalS3Server
from helpers import make_step, make_trajectory

CLI = [sys.executable, "-m", "cli.main"]
VIEWPORT = (EnvConfig().viewport_width, EnvConfig().viewport_height)  # a screenshot's size: the viewport only


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes the whole image, not only its header
    return image


async def sample(store: Storage, cfg: SampleConfig, tasks: list[str]):
    suite = MiniWoBSuite(tasks, seeds_per_task=1)
    await suite.start()
    try:
        return await sample_trajectories(suite, suite.tasks("train"), lambda t, k: OracleAgent(suite), store, cfg)
    finally:
        await suite.stop()


async def test_each_step_stores_the_page_it_saw_and_none_without_the_option(tmp_path):
    store = Storage(str(tmp_path))
    await sample(store, SampleConfig(run_id="s", screenshots=True), ["enter-text", "click-test"])
    steps = store.read_table("s", 0, "sample", table_name="steps").to_pylist()
    assert steps and all(s["screenshot"] for s in steps)
    files = store.fs.glob(store.path("s", 0, "sample") + "/screenshots/*/*.png")
    assert len(files) == len(steps) == len({s["screenshot"] for s in steps})  # one file per step
    by_traj: dict[str, list[bytes]] = {}
    for s in sorted(steps, key=lambda s: s["step"]):
        data = store.fs.cat_file(store.fs._strip_protocol(s["screenshot"]))
        assert decode(data).size == VIEWPORT
        by_traj.setdefault(s["trajectory_id"], []).append(data)
    typed = by_traj[next(t for t in by_traj if "enter-text" in t)]
    assert len(typed) >= 2 and typed[0] != typed[1]  # taken afresh each step, not once per episode

    await sample(store, SampleConfig(run_id="s", stage="plain"), ["click-test"])
    plain = store.read_table("s", 0, "plain", table_name="steps").to_pylist()
    assert plain and all(s["screenshot"] is None for s in plain)
    assert not store.fs.exists(store.path("s", 0, "plain") + "/screenshots")


async def test_screenshots_on_an_s3_root_and_copied_into_a_report(tmp_path, monkeypatch):
    with LocalS3Server() as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        store = Storage(f"{server.create_bucket(f'shots-{uuid.uuid4().hex[:8]}')}/root")
        await sample(store, SampleConfig(run_id="s3run", screenshots=True), ["click-test"])
        steps = store.read_table("s3run", table_name="steps").to_pylist()
        assert steps and all(s["screenshot"].startswith("s3://") for s in steps)
        images = copy_screenshots(store, steps, tmp_path / "report")
    assert set(images) == {s["screenshot"] for s in steps}
    for name in images.values():
        assert decode((tmp_path / "report" / name).read_bytes()).size == VIEWPORT


async def test_a_report_finds_the_screenshots_of_a_moved_storage_root(tmp_path):
    await sample(Storage(str(tmp_path / "old")), SampleConfig(run_id="m", screenshots=True), ["click-test"])
    shutil.move(tmp_path / "old", tmp_path / "new")  # the rows still name the old place
    store = Storage(str(tmp_path / "new"))
    steps = store.read_table("m", table_name="steps").to_pylist()
    assert steps and all("/old/" in s["screenshot"] for s in steps)
    images = copy_screenshots(store, steps, tmp_path / "report")
    assert len(images) == len(steps) and all((tmp_path / "report" / n).is_file() for n in images.values())


async def test_a_screenshot_that_cannot_be_stored_or_taken_does_not_fail_the_episode(tmp_path, pages_suite, caplog):
    store = Storage(str(tmp_path))
    # A file where the screenshots folder belongs: every screenshot write fails, for real.
    blocker = Path(store.path("b", 0, "sample")) / "screenshots"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    with caplog.at_level(logging.WARNING, logger="evolver_core.sampling.sampler"):
        summary = await sample(store, SampleConfig(run_id="b", screenshots=True), ["click-test"])
    assert summary.new == 1 and summary.failed == 0
    steps = store.read_table("b", 0, "sample", table_name="steps").to_pylist()
    assert steps and all(s["screenshot"] is None for s in steps)
    assert "not stored" in caplog.text

    async with launch_browser() as browser:  # taking one fails: the page is gone
        env = await browser.new_env(pages_suite)
        await env.reset(pages_suite.task())
        assert await env.screenshot() is not None
        await env.page.close()
        with caplog.at_level(logging.WARNING, logger="evolver_core.browser.env"):
            assert await env.screenshot() is None
        await env.close()
    assert "screenshot of" in caplog.text


def test_steps_written_before_the_column_existed_still_read(tmp_path):
    store = Storage(str(tmp_path))
    old = to_table([make_step(screenshot=None)]).drop_columns(["screenshot"])
    path = store.path("run-1", 0, "sample", "steps", "old")
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    pq.write_table(old, path)
    table = store.read_table("run-1", 0, "sample", table_name="steps")
    assert table.column("screenshot").to_pylist() == [None]
    assert from_table(pq.read_table(path)) == [make_step(screenshot=None)]


async def test_cli_sample_with_screenshots_then_a_self_contained_report(tmp_path):
    data = tmp_path / "data"
    out = subprocess.run(CLI + ["sample", "--suite", "miniwob", "--tasks", "2", "--policy", "oracle", "--run", "cs",
                                "--miniwob-tasks", "enter-text,click-test", "--screenshots",
                                "--storage", str(data), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["trajectories"] == 2
    n_steps = Storage(str(data)).read_table("cs", table_name="steps").num_rows
    report = tmp_path / "report"
    shown = subprocess.run(CLI + ["view", "cs", "--storage", str(data), "--out", str(report)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"{n_steps} screenshots" in shown.stdout
    shutil.rmtree(data)  # the report must not need the storage root
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto((report / "index.html").as_uri())
        first = page.locator("details.traj").first
        await first.locator("summary").click()
        image = first.locator("img.shot").first
        await image.scroll_into_view_if_needed()  # lazy loading: load it by showing it
        await image.evaluate("img => img.decode()")
        assert await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == list(VIEWPORT)
        src = await image.get_attribute("src")
        assert (report / src).is_file() and await page.locator("img.shot").count() == n_steps
        await browser.close()



def test_report_shows_a_screenshot_only_where_one_was_copied():
    uri = "file:///x/runs/run-1/round=0/sample/screenshots/t/0.png"
    shots = (uri, None, "file:///x/runs/run-1/gone.png")
    steps = [dataclasses.asdict(make_step(step=i, screenshot=s)) for i, s in enumerate(shots)]
    html = render_report("run-1", [dataclasses.asdict(make_trajectory(n_steps=3))], steps,
                         images={uri: "screenshots/abc.png"})
    assert html.count("<img class='shot'") == 1 and "src='screenshots/abc.png'" in html
    assert "screenshot not found: file:///x/runs/run-1/gone.png" in html
