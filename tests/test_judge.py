"""The judge: verdict parsing, the prompt it sends, agreement with gold rewards, and one real
call against the tiny model's server."""

from __future__ import annotations

import pytest

from evolver_core.data.run_layout import judge_stage_for, judged_stage
from evolver_core.judge.judge import NO_ANSWER, Verdict, agreement, judge, judge_messages, parse_verdict
from evolver_core.judge.stored import split_judged, verdict_row
from evolver_core.prompts import load_prompt
from infra.model_server import ModelServer


@pytest.mark.parametrize("text, verdict", [
    ("The page shows the order confirmation.\nSUCCESS", 1),
    ("The search box is still empty.\nNOT SUCCESS", 0),
    ("Partly done.\nNOT  SUCCESS.", 0),
    ("It says SUCCESS in the banner, but the second part is missing.\nNOT SUCCESS", 0),
    ("Not a success at first glance, but the trees confirm it.\nVerdict: SUCCESS", 1),
    ("the task was successful", None),
    ("SUCCESSFUL", None),
    ("", None),
    ("\x00 garbage", None),
])
def test_parse_verdict(text: str, verdict: int | None) -> None:
    assert parse_verdict(text).verdict == verdict


def test_verdict_keeps_reasoning_and_raw_reply() -> None:
    text = "The cart holds the item.\nNOT SUCCESS\n"
    assert parse_verdict(text) == Verdict(verdict=0, reasoning="The cart holds the item.", raw=text)


def test_judge_prompt_holds_task_answer_and_the_last_observations() -> None:
    trees = [f"[1] heading 'page {i}'" for i in range(5)]
    system, user = judge_messages("Find the price.", "$12", trees, last_n=3)
    assert system == {"role": "system", "content": load_prompt("judge_system")}
    text = user["content"]
    assert text.startswith("TASK: Find the price.\nResult Response: $12\n") and text.endswith("Your verdict:")
    assert "page 0" not in text and "page 1" not in text
    first, last = "Accessibility tree 1 of 3:\n[1] heading 'page 2'", "tree 3 of 3:\n[1] heading 'page 4'"
    assert text.index(first) < text.index(last)
    _, no_answer = judge_messages("Find the price.", None, ["x" * 100], max_tree_chars=10)
    assert f"Result Response: {NO_ANSWER}" in no_answer["content"]
    assert "x" * 10 + "\n... (truncated)" in no_answer["content"] and "x" * 11 not in no_answer["content"]


def test_agreement() -> None:
    verdicts = [1, 1, 0, 0, None, 1]
    gold = [1.0, 0.0, 0.0, 1.0, 1.0, None]  # the last has no gold: left out
    assert agreement(verdicts, gold) == {"accuracy": 2 / 5, "precision": 1 / 2, "recall": 1 / 3, "n": 5,
                                         "unparsable": 1}
    assert agreement([1, None], [None, None]) == {"accuracy": None, "precision": None, "recall": None, "n": 0,
                                                 "unparsable": 1}
    assert agreement([0, 0], [0.0, 0.2])["precision"] is None  # nothing judged a success
    with pytest.raises(ValueError):
        agreement([1], [])


async def test_judge_through_a_real_server(tiny_server: ModelServer) -> None:
    client = tiny_server.client()
    verdict = await judge(client, "Click OK.", "done", ["[1] button 'OK'"], max_tokens=12)
    assert verdict.raw and verdict.verdict in (0, 1, None)  # the tiny model babbles; it must not break
    assert client.usage.requests == 1


def test_verdicts_attach_to_the_stage_they_judged() -> None:
    """Real and synthetic trajectories of a task share ids; eval repeats do too. A verdict
    belongs to the trajectory of the stage its judge stage rated, and no other."""
    def row(stage: str, verdict: int | None = None, source: str = "real") -> dict:
        return {"round": 1, "stage": stage, "trajectory_id": "t#0", "source": source, "judge_verdict": verdict}

    rows = [row("sample"), row("judge", 1), row("synthesize", 0, "synthetic"), row("eval-0"), row("eval-1"),
            row(judge_stage_for("eval-1"), 1)]
    trajs, verdicts = split_judged(rows)
    assert [t["stage"] for t in trajs] == ["sample", "synthesize", "eval-0", "eval-1"]
    assert [verdict_row(t, verdicts)["judge_verdict"] for t in trajs] == [1, 0, None, 1]
    assert judge_stage_for("sample") == "judge" and judged_stage("eval-1-judge") == "eval-1"
    assert judged_stage("sample") is None
