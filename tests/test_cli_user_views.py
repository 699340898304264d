"""What a user reaches for after a run: the HTML viewer (in headless chromium), `eval`, `doctor`."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

from playwright.async_api import async_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from evolver_core.agents.oracle import OracleAgent
from evolver_core.browser.launch import CHROMIUM_ARGS, chromium_path
from evolver_core.contracts.episode import trajectory_id
from evolver_core.data.records import to_table
from evolver_core.data.storage import Storage
from evolver_core.judge.stored import split_judged
from evolver_core.reporting.viewer import render_report
from evolver_core.sampling.sampler import SampleConfig, sample_trajectories
from evolver_core.suites.miniwob import MiniWoBSuite
from helpers import make_trajectory

CLI = [sys.executable, "-m", "cli.main"]


async def test_view_writes_a_static_report_with_working_filters(tmp_path):
    suite = MiniWoBSuite(["click-test", "enter-text"], seeds_per_task=2)
    await suite.start()
    await sample_trajectories(suite, suite.tasks("train"), lambda t, k: OracleAgent(suite), Storage(str(tmp_path)),
                              SampleConfig(run_id="v1"))
    await sample_trajectories(suite, suite.tasks("test")[:1], lambda t, k: OracleAgent(suite), Storage(str(tmp_path)),
                              SampleConfig(run_id="v1", round=1, stage="eval"))
    await suite.stop()
    out = subprocess.run(CLI + ["view", "v1", "--storage", str(tmp_path), "--out", str(tmp_path / "report")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto((tmp_path / "report" / "index.html").as_uri())
        assert await page.text_content("#count") == "5 of 5 trajectories"
        # Gold rated every episode and no judge ran: the gold reward shows, nothing says "unjudged".
        summaries = await page.locator("details.traj summary").all_text_contents()
        assert all(s.endswith("· gold 1") for s in summaries) and await page.locator("summary .bad").count() == 0
        await page.select_option("select[name=verdict]", "success")
        assert await page.text_content("#count") == "5 of 5 trajectories"
        await page.select_option("select[name=verdict]", "")
        assert await page.locator("#plot svg").count() == 1  # the success figure, with its n
        assert "n=1" in await page.text_content("#plot")
        await page.select_option("select[name=stage]", "eval")
        assert await page.text_content("#count") == "1 of 5 trajectories"
        await page.select_option("select[name=stage]", "")
        await page.select_option("select[name=round]", "0")
        first = page.locator("details.traj:visible").first
        await first.locator("summary").click()
        assert "Thought:" in await first.inner_text() and "RootWebArea" in await first.inner_text()
        await browser.close()


def test_the_report_shows_the_ratings_that_exist_and_unrated_only_where_none_does():
    """Rows as a run stores them: sampled episodes carry their gold reward and no verdict (the
    judge stage writes judged copies), synthetic ones their verdict and no gold."""
    def episode(task: str, **fields):
        return make_trajectory(**{"task_id": task, "trajectory_id": trajectory_id(task, 0), "judge_verdict": None,
                                  "judge_reasoning": None, **fields})

    def judged(row, verdict: int | None):
        return dataclasses.replace(row, stage="judge", judge_verdict=verdict, judge_reasoning="because")

    gold_only, gold_and_judge = episode("gold-only", gold_reward=1.0), episode("both", gold_reward=0.0)
    unparsable, crashed = episode("live", suite="webvoyager", gold_reward=None), episode(
        "crashed", gold_reward=None, stop_reason="error", error="chromium died")
    synthetic = episode("synthetic", stage="synthesize", source="synthetic", gold_reward=None, judge_verdict=0)
    rows = to_table([gold_only, gold_and_judge, unparsable, crashed, synthetic, judged(gold_and_judge, 1),
                     judged(unparsable, None)]).to_pylist()
    trajectories, verdicts = split_judged(rows)
    html = render_report("r", trajectories, [], verdicts)
    shown = {re.search(r"<b>(\S+)#0</b>", summary).group(1): (verdict, re.sub("<[^>]+>", "", summary).split(" · ")[6:])
             for verdict, summary in re.findall(r"data-verdict=\"([^\"]+)\".*?<summary>(.*?)</summary>", html)}
    assert shown == {"gold-only": ("success", ["gold 1"]),
                     "both": ("not-success", ["judge success", "gold 0"]),  # the filter goes by gold where it exists
                     "live": ("unparsable", ["judge unparsable"]),
                     "crashed": ("unrated", ["unrated"]),
                     "synthetic": ("not-success", ["judge not-success"])}
    assert "unjudged" not in html and html.count("class='unrated'") == 1


def test_eval_prints_success_with_an_interval(prefect_server, tmp_path):
    out = subprocess.run(CLI + ["eval", "--suite", "sandbox", "--split", "test", "--policy", "oracle", "--tasks", "3",
                                "--storage", str(tmp_path), "--json"], capture_output=True, text=True, timeout=300,
                         env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tasks"] == 3 and result["success_rate"] == 1.0
    assert 0 < result["ci_low"] < 1 and result["ci_high"] == 1.0


def test_doctor_passes_here_and_names_what_to_fix(tmp_path):
    ok = subprocess.run(CLI + ["doctor", "--storage", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(CLI + ["doctor", "--storage", "s3://no-such-bucket/x"], capture_output=True, text=True,
                         timeout=120, env=os.environ | {"WEBEVOLVER_S3_ENDPOINT": "http://127.0.0.1:9",
                                                        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    assert bad.returncode == 1 and "FIX storage" in bad.stdout


def test_sample_against_an_openai_compatible_endpoint(tiny_server, tmp_path):
    """`--model-backend openai` talks to any OpenAI-compatible server: here a real one on the tiny model."""
    out = subprocess.run(CLI + ["sample", "--suite", "miniwob", "--tasks", "2", "--policy", "model",
                                "--model-backend", "openai", "--base-url", tiny_server.base_url,
                                "--model", tiny_server.model, "--max-steps", "2", "--run", "oa",
                                "--storage", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=300, env=os.environ | {"OPENAI_API_KEY": "test-key"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["trajectories"] == 2 and result["judge_agreement"]["n"] == 2
    assert 0.0 <= result["action_validity"] <= 1.0 and result["success_rate"] is not None
    assert "test-key" not in out.stdout + out.stderr
    steps = Storage(str(tmp_path)).read_table("oa", 0, "sample", table_name="steps").to_pandas()
    assert steps.response.notna().all() and "test-key" not in steps.to_json()


async def test_compare_tabulates_and_charts_eval_stages_across_runs(prefect_server, tmp_path):
    suite = MiniWoBSuite(["click-test"], seeds_per_task=2)
    await suite.start()
    for run, stage in (("a", "eval"), ("b", "eval-0"), ("c", "sample")):
        await sample_trajectories(suite, suite.tasks("test"), lambda t, k: OracleAgent(suite), Storage(str(tmp_path)),
                                  SampleConfig(run_id=run, round=1, stage=stage))
    await suite.stop()
    out = subprocess.run(CLI + ["compare", "a", "b", "--storage", str(tmp_path), "--out", str(tmp_path / "cmp"),
                                "--json"], capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    assert [(r["run"], r["round"], r["suite"], r["episodes"], r["success_rate"]) for r in rows] == [
        ("a", 1, "miniwob", 2, 1.0), ("b", 1, "miniwob", 2, 1.0)]
    svg = (tmp_path / "cmp" / "comparison.svg").read_text()
    assert "a round 1" in svg and "b round 1" in svg and svg.count("n=2") == 2  # a bar per run, its n
    assert "a r1 miniwob: 100.0% of 2" in out.stdout and "comparison.csv and comparison.svg" in out.stdout

    # The same files under the first run, one folder per set of runs.
    under_run = tmp_path / "runs" / "a" / "report" / "compare-a-vs-b"
    assert {n: Path(u.removeprefix("file://")) for n, u in result["files"].items()} == {
        n: under_run / n for n in ("comparison.csv", "comparison.svg", "comparison.md")}
    assert (under_run / "comparison.svg").read_text() == svg
    assert (under_run / "comparison.csv").read_text() == (tmp_path / "cmp" / "comparison.csv").read_text()
    assert "![success by run, round and suite](comparison.svg)" in (under_run / "comparison.md").read_text()

    # And as artifacts of the compare flow run: the table, and the chart inline.
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(result["flow_run_id"])])))
        flow_run = client.read_flow_run(UUID(result["flow_run_id"]))
    assert flow_run.state.is_completed() and result["flow_run_url"].endswith(result["flow_run_id"])
    by_key = {a.key: a for a in artifacts}
    assert by_key["compare-a-vs-b-table"].type == "table"
    table = by_key["compare-a-vs-b-table"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [(r["run"], r["episodes"], r["success_rate"]) for r in table] == [("a", 2, 1.0), ("b", 2, 1.0)]
    plot = by_key["compare-a-vs-b-plot"]
    assert plot.type == "markdown"
    inline = re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", plot.data).group(1)
    assert base64.b64decode(inline).decode() == svg and result["files"]["comparison.svg"] in plot.data

    for runs, message in ((["nope"], "no run 'nope'"), (["c"], "no evaluation trajectories")):
        bad = subprocess.run(CLI + ["compare", *runs, "--storage", str(tmp_path), "--out", str(tmp_path / "cmp2")],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-2000:]
