"""Self-evaluation r̂(τ, q) ∈ {0, 1}: an LLM judges whether a trajectory completed its task.

The criteria are the reference's (WebVoyager's evaluator with accessibility trees in place
of screenshots, reference notes section 5): judge only from what is shown, every part of a
multi-part task must be done, the pages beat the response when they disagree, content only
in the response is believed. The judge sees the task, the final answer and the last few
observations (default 3, the final page last) and replies with its reasoning, then
``SUCCESS`` or ``NOT SUCCESS``. Rejection sampling keeps trajectories judged 1; a reply
with no verdict is `None`, which callers count and treat as failure.

`agreement` measures the judge against the suites' programmatic gold rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evolver_core.config import JudgeConfig
from evolver_core.judge.verdicts import last_verdict
from evolver_core.llm import LLMClient
from evolver_core.prompts import load_prompt

DEFAULT_LAST_N = 3
DEFAULT_MAX_TREE_CHARS = 6000  # per observation: keeps three trees inside a small model's context
NO_ANSWER = "(no final answer)"



@dataclass(frozen=True)
class Verdict:
    verdict: int | None  # 1 success, 0 failure, None unparsable
    reasoning: str
    raw: str


def parse_verdict(text: str) -> Verdict:
    """The last verdict word of the reply decides; the text before it is the reasoning."""
    verdict, at = last_verdict(text, "SUCCESS")
    return Verdict(verdict=verdict, reasoning=(text or "")[:at].strip(), raw=text or "")


def _clip(tree: str, max_chars: int | None) -> str:
    if max_chars is None or len(tree) <= max_chars:
        return tree
    return tree[:max_chars] + "\n... (truncated)"


def judge_messages(query: str, final_answer: str | None, observations: Sequence[str], *,
                   last_n: int = DEFAULT_LAST_N, max_tree_chars: int | None = DEFAULT_MAX_TREE_CHARS) -> list[dict]:
    """The judge's prompt: the task, the final answer, the last `last_n` observations."""
    shown = list(observations)[-last_n:] if last_n > 0 else []
    trees = "\n\n".join(load_prompt("judge_observation", index=i, count=len(shown), tree=_clip(tree, max_tree_chars))
                        for i, tree in enumerate(shown, 1))
    user = load_prompt("judge_user", task=query, answer=final_answer or NO_ANSWER, observations=trees)
    return [{"role": "system", "content": load_prompt("judge_system")}, {"role": "user", "content": user}]


async def judge(client: LLMClient, query: str, final_answer: str | None, observations: Sequence[str], *,
                last_n: int = DEFAULT_LAST_N, max_tree_chars: int | None = DEFAULT_MAX_TREE_CHARS,
                temperature: float = 0.0, seed: int | None = 42, max_tokens: int = JudgeConfig.max_tokens) -> Verdict:
    """Judge one trajectory (temperature 0 and seed 42, as the reference)."""
    messages = judge_messages(query, final_answer, observations, last_n=last_n, max_tree_chars=max_tree_chars)
    completion = await client.chat(messages, temperature=temperature, seed=seed, max_tokens=max_tokens)
    return parse_verdict(completion.text)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def agreement(verdicts: Sequence[int | None], gold_rewards: Sequence[float | None]) -> dict:
    """Judge vs gold over the trajectories that have a gold reward (gold > 0.5 is success, a
    None verdict counts as 0). Keys: accuracy, precision, recall (None where undefined, e.g.
    no gold at all), n (pairs with gold), unparsable (None verdicts among all given)."""
    if len(verdicts) != len(gold_rewards):
        raise ValueError(f"{len(verdicts)} verdicts but {len(gold_rewards)} gold rewards")
    pairs = [(v or 0, int(g > 0.5)) for v, g in zip(verdicts, gold_rewards, strict=True) if g is not None]
    tp = sum(1 for v, g in pairs if v and g)
    return {
        "accuracy": _ratio(sum(1 for v, g in pairs if v == g), len(pairs)),
        "precision": _ratio(tp, sum(1 for v, _ in pairs if v)),
        "recall": _ratio(tp, sum(1 for _, g in pairs if g)),
        "n": len(pairs),
        "unparsable": sum(1 for v in verdicts if v is None),
    }
