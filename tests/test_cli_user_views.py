"""What a user reaches for after a run: the HTML viewer (in headless chromium), `eval`, `doctor`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from playwright.async_api import async_playwright

from evolver_core.agent import OracleAgent
from evolver_core.browser.launch import CHROMIUM_ARGS, chromium_path
from evolver_core.sampling import SampleConfig, sample_trajectories
from evolver_core.storage import Storage
from evolver_core.suites.miniwob import MiniWoBSuite

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
        await page.select_option("select[name=stage]", "eval")
        assert await page.text_content("#count") == "1 of 5 trajectories"
        await page.select_option("select[name=stage]", "")
        await page.select_option("select[name=round]", "0")
        first = page.locator("details.traj:visible").first
        await first.locator("summary").click()
        assert "Thought:" in await first.inner_text() and "RootWebArea" in await first.inner_text()
        await browser.close()


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


async def test_compare_tabulates_and_charts_eval_stages_across_runs(tmp_path):
    suite = MiniWoBSuite(["click-test"], seeds_per_task=2)
    await suite.start()
    for run, stage in (("a", "eval"), ("b", "eval-0")):
        await sample_trajectories(suite, suite.tasks("test"), lambda t, k: OracleAgent(suite), Storage(str(tmp_path)),
                                  SampleConfig(run_id=run, round=1, stage=stage))
    await suite.stop()
    out = subprocess.run(CLI + ["compare", "a", "b", "--storage", str(tmp_path), "--out", str(tmp_path / "cmp"),
                                "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    assert [(r["run"], r["round"], r["suite"], r["episodes"], r["success_rate"]) for r in rows] == [
        ("a", 1, "miniwob", 2, 1.0), ("b", 1, "miniwob", 2, 1.0)]
    assert (tmp_path / "cmp" / "comparison.svg").read_text().count("<rect") == 3  # background + two bars
