"""`webevolver eval` beyond gold rewards: a suite without gold (WebVoyager's format) rated by
the judge r̂, and world-model look-ahead; real browser, real model servers (the tiny model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evolver_core.data.storage import Storage
from evolver_core.suites.httpserver import LocalHTTPServer

CLI = [sys.executable, "-m", "cli.main"]
PAGES = Path(__file__).parent / "pages"


@pytest.fixture
def local_webvoyager(tmp_path):
    """WebVoyager-format tasks (no gold answers) whose start page is a local one, in a data dir."""
    site = LocalHTTPServer.static(str(PAGES))
    root = tmp_path / "data" / "webvoyager"
    root.mkdir(parents=True)
    tasks = [{"web_name": "Local", "id": f"Local--{i}", "ques": f"Search for item {i}.", "web": site.url + "form.html"}
             for i in range(2)]
    (root / "WebVoyager_data.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    (root / "reference_answer.json").write_text("{}")
    yield tmp_path / "data"
    site.close()


def test_eval_rates_gold_less_episodes_by_the_judge_and_looks_ahead(prefect_server, local_webvoyager, tmp_path):
    out = subprocess.run(CLI + ["eval", "--suite", "webvoyager", "--policy", "tiny", "--tasks", "2", "--max-steps", "2",
                                "--judge", "tiny", "--lookahead-depth", "1", "--world-model", "tiny", "--run", "ev",
                                "--storage", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=600,
                         env=os.environ | {"WEBEVOLVER_DATA_DIR": str(local_webvoyager)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["lookahead_depth"] == 1 and result["tasks"] == 2
    # No gold: the suite rates nothing, the judge rates every episode.
    assert result["rated_by_gold"] == 0 and result["rated_by_judge"] == 2 and result["unrated"] == 0
    assert result["success_rate"] is not None and result["ci_low"] <= result["success_rate"] <= result["ci_high"]
    store = Storage(str(tmp_path))
    judged = store.read_table("ev", 0, "eval-0-judge", table_name="trajectories").to_pandas()
    assert len(judged) == 2 and judged.judge_reasoning.notna().all()
    assert sum(judged.judge_verdict == 1) / 2 == result["success_rate"]
    steps = store.read_table("ev", 0, "eval-0", table_name="steps").to_pandas()
    assert len(steps) > 0 and all('"lookahead":{' in s and '"depth":1' in s for s in steps.sampling)


def test_eval_without_a_judge_leaves_gold_less_episodes_unrated(prefect_server, local_webvoyager, tmp_path):
    out = subprocess.run(CLI + ["eval", "--suite", "webvoyager", "--policy", "tiny", "--tasks", "1", "--max-steps", "1",
                                "--run", "ev", "--storage", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=600,
                         env=os.environ | {"WEBEVOLVER_DATA_DIR": str(local_webvoyager)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["success_rate"] is None and result["unrated"] == 1 and "1 unrated" in out.stdout


def test_eval_look_ahead_needs_a_world_model(tmp_path):
    out = subprocess.run(CLI + ["eval", "--suite", "miniwob", "--policy", "tiny", "--lookahead-depth", "2",
                                "--storage", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "--world-model" in out.stdout + out.stderr


def test_eval_look_ahead_takes_the_sections_of_the_preset_its_world_model_was_trained_with(tmp_path):
    """The cpu preset's world model writes changes without a rationale and scores its own
    ends; the sections' defaults would ask it for a rationale and rate by an LLM."""
    from evolver_core.config import ModelSpec
    from evolver_core.presets import get_preset
    from flows.evaluate import lookahead_spec

    wm, scorer = ModelSpec(model="wm"), ModelSpec(model="scorer")
    cpu = get_preset("cpu")
    spec = lookahead_spec(wm, scorer, 1, "cpu")
    assert (spec.lookahead, spec.wm, spec.judge) == (cpu.lookahead, cpu.world_model, cpu.judge)
    assert (spec.lookahead.scorer, spec.wm.thought) == ("world_model", False)
    defaults = lookahead_spec(wm, scorer, 1, None)
    assert (defaults.lookahead.scorer, defaults.wm.thought) == ("llm", True)
    out = subprocess.run(CLI + ["eval", "--suite", "miniwob", "--policy", "tiny", "--lookahead-depth", "1",
                                "--world-model", "tiny", "--preset", "nope", "--storage", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "--preset" in out.stdout + out.stderr and "unknown preset" in out.stdout + out.stderr
