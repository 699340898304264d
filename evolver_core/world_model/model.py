"""The world model M_w: predicts the next page (accessibility tree) from the current page
and an action, with a short rationale first (paper section 3.3; reference notes sections 7, 11).

Context c_t^w, ONE layout for training and inference (`build_wm_messages`; the reference
trained on single transitions but prompted with a history, notes 11.5):

    system  what to predict and the tree format (prompt ``world_model_system``)
    user    OBJECTIVE, START URL, then either "first step: open the start URL"
            (``world_model_user_first``) or the past actions (with their thoughts), the
            CURRENT PAGE (the last observation only) and the NEW ACTION (``world_model_user``)

Target (`format_wm_target`), in the preset's form (`WorldModelConfig.form`):

- ``tree`` (the paper's): ``THOUGHT: <rationale>\\nOBSERVATION:\\n<next tree>``;
- ``delta``: ``THOUGHT: <rationale>\\nCHANGES:\\n<delta>`` (`world_model.delta`: new, removed and
  updated elements by id, or the whole page when it is replaced), applied to the current page
  in code, so every prediction is still a complete tree with stable ids. The default because
  a small model copies a 100-300 token tree badly (it loops to the token cap) while most
  actions change a line or two (DESIGN.md, "The world model").

The rationale line (``THOUGHT: ...``) comes first when the preset distills rationales
(`WorldModelConfig.rationale_max_tokens` > 0, the paper's); with 0 the target is the marker
and the body alone. The cpu preset drops it: a 135M model's distilled rationales repeat
themselves, and a world model trained on them loops inside the THOUGHT line to its token cap
and never writes the changes (RESULTS.md R10). The system prompt says which reply to write
(``world_model_reply`` / ``world_model_reply_thought``), and `reply_regex` is the same reply
as a grammar: servers with structured outputs decode within it (`WorldModelConfig.constrained`).

Either form says when the action ends the episode (``= episode ends: success|failure`` as
the first line of the page or the changes): the world model learns it from the real
transitions that ended one (the page after the last action of an episode the page ended),
with their gold outcome. At inference `parse_wm_output` splits the rationale off, so the
policy never sees THOUGHT text (the reference leaked it into synthetic observations).

The outcome's probability (`outcome_probability`, asked for with ``outcome_probability=True``
where the server returns token log-probabilities): P(success) / (P(success) + P(failure)) of
the token after ``episode ends:`` in the reply. Look-ahead's world-model scorer ranks ends
by it: a small world model writes "success" at every predicted end, while this probability
still ranks real successful ends above failed ones (RESULTS.md R16).

Training data:

1. `transitions_from_records`: every sampled trajectory, successful or failed, gives its first
   step (task + start URL -> o_1; the tree form only: the delta form always starts from a real
   page) and each (o_t, a_t -> o_{t+1}) with a valid a_t. Pages are
   the stored pages alone (the error is a column of its own): the world model predicts pages,
   not the executor's errors.
   The past actions are ``Thought: ...\\nAction: ...`` of the earlier valid steps; callers
   at inference pass the policy's turns in the same form (`policy.format_reply`).
2. `cap_transitions`: dedupe, then cap first steps per site and transitions per action key
   (as the reference: 20 and 50), seeded. Failed ends are in their natural share: they come
   from failed samples and, with `SamplingConfig.demo_explore`, round 0's explorations (a
   third each of pages, successful and failed ends made M_w predict failed ends everywhere,
   RESULTS.md R14).
3. `distill_rationales`: the base model explains each transition (temperature 0); first
   steps get a fixed rationale; with `max_tokens` 0, none (all None, no model call).
4. `wm_sft_examples`: prompt-completion examples, the policy SFT format, so
   `finetune.finetune` trains the world model unchanged.

The transitions and rationales are saved as Parquet (`WM_TRANSITION_SCHEMA`); the reference
never saved its world-model data (notes 11.1).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from evolver_core.config import WorldModelConfig
from evolver_core.contracts.observation import TREE_START
from evolver_core.contracts.reply import format_reply
from evolver_core.data.records import WM_TRANSITION_SCHEMA, StepRecord, TrajectoryRecord, validate_table
from evolver_core.llm import LLMClient, TokenLogprob
from evolver_core.prompts import load_prompt
from evolver_core.training.sft import Example, steps_by_trajectory
from evolver_core.world_model.delta import (DELTA_REGEX, ENDS, OUTCOMES, PAGE_REGEX, DeltaError, apply_delta, diff,
                                            ends_line, format_delta, parse_delta, read_ends_line)

FIRST = "first"  # action key of first steps
# Alternatives asked for at each token: the outcome's two words are among the likeliest few
# after "episode ends:"; 20 is vLLM's default cap (`max_logprobs`).
OUTCOME_TOP_LOGPROBS = 20
NO_PAST_ACTIONS = "(none)"

_OBSERVATION_MARKER = re.compile(r"^[ \t*#]*OBSERVATION[ \t*]*:[ \t*]*\n?", re.MULTILINE)
_CHANGES_MARKER = re.compile(r"^[ \t*#]*CHANGES[ \t*]*:[ \t*]*\n?", re.MULTILINE)
_DELTA_START = re.compile(r"^(= |[+~] |- \[)", re.MULTILINE)
_THOUGHT_LABEL = re.compile(r"^[ \t*#]*THOUGHT[ \t*]*:[ \t*]*", re.IGNORECASE)
_FENCE = re.compile(r"^```[\w-]*[ \t]*\n|\n?```[ \t]*$")


@dataclass(frozen=True)
class Transition:
    """One world-model training unit: (context) -> next observation."""

    trajectory_id: str
    step: int  # the step whose observation is predicted: unique per trajectory (0 = the first page)
    objective: str
    start_url: str
    past_actions: tuple[str, ...]  # earlier actions, each "Thought: ...\nAction: ..." or bare action
    last_observation: str | None  # None for the first step
    action: str | None  # None for the first step
    next_observation: str
    action_key: str  # e.g. "click [12]", or FIRST
    site: str
    source: str  # "real" | "synthetic", of the trajectory
    ends: bool = False  # the action ended the episode (the page said the task is over)
    success: bool | None = None  # how the episode ended, when it did and a gold reward says


@dataclass(frozen=True)
class WMPrediction:
    rationale: str
    observation: str | None  # None = unparsable
    raw: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cut: bool = False  # the token limit stopped it: `observation` ends at its last complete line
    ends: bool = False  # the world model says the action ends the episode
    success: bool | None = None  # ... and how (None: it did not say)
    p_success: float | None = None  # `outcome_probability` of the reply (None: not asked, served or said)


# -- context and target --------------------------------------------------------------------

def _past_actions_text(past_actions: Sequence[str]) -> str:
    if not past_actions:
        return NO_PAST_ACTIONS
    return "\n".join(load_prompt("world_model_past_action", index=i, action=a) for i, a in enumerate(past_actions, 1))


def _markers(form: str) -> tuple[str, str]:
    """(the body's marker, what the body is) of a reply in `form`."""
    return ("CHANGES", "the changes") if form == "delta" else ("OBSERVATION", "the predicted page")


def build_wm_messages(objective: str, start_url: str, past_actions: Sequence[str], last_observation: str | None,
                      action: str | None, *, form: str = "tree", thought: bool = True) -> list[dict]:
    """c_t^w (module docstring). The first step has no observation and no action. `thought`:
    the reply starts with a rationale line."""
    if (last_observation is None) != (action is None):
        raise ValueError("last_observation and action are both None (first step) or both given")
    if action is None:
        user = load_prompt("world_model_user_first", objective=objective, start_url=start_url)
    else:
        user = load_prompt("world_model_user", objective=objective, start_url=start_url,
                           past_actions=_past_actions_text(past_actions), observation=last_observation,
                           action=action)
    # Literal names, so a stage's code digest names every prompt (`data.identity`).
    system = load_prompt("world_model_system_delta") if form == "delta" else load_prompt("world_model_system")
    marker, what = _markers(form)
    reply = (load_prompt("world_model_reply_thought", marker=marker, what=what) if thought
             else load_prompt("world_model_reply", marker=marker, what=what))
    return [{"role": "system", "content": f"{system}\n{reply}"}, {"role": "user", "content": user}]


def reply_regex(form: str, thought: bool) -> str:
    """The whole reply `build_wm_messages` asks for, as a regex (constrained decoding)."""
    marker, _ = _markers(form)
    body = DELTA_REGEX if form == "delta" else rf"({ENDS}(: (success|failure))?\n)?{PAGE_REGEX}"
    return (r"THOUGHT: [^\n]+\n" if thought else "") + rf"{marker}:\n({body})"


def format_wm_target(rationale: str | None, t: Transition, form: str = "tree") -> str:
    """What M_w is trained to write for `t` (module docstring); no rationale line when
    `rationale` is None."""
    marker, _ = _markers(form)
    if form == "delta":
        if t.last_observation is None:
            raise ValueError("the delta form predicts changes of a page: a first page has none")
        body = format_delta(diff(t.last_observation, t.next_observation, ends=t.ends, success=t.success))
    else:
        body = (f"{ends_line(t.success)}\n" if t.ends else "") + t.next_observation
    return ("" if rationale is None else f"THOUGHT: {rationale}\n") + f"{marker}:\n{body}"


def _clean_tree(text: str) -> str | None:
    """The tree text without a surrounding code fence or blank edges; None when empty.
    Leading tabs of the first line are kept: they are tree depth."""
    tree = _FENCE.sub("", text.strip("\n")).strip("\n").rstrip()
    return tree or None


def parse_wm_output(text: str, *, form: str = "tree", current: str | None = None, cut: bool = False) -> WMPrediction:
    """Rationale, predicted page and whether the episode ends, of a world-model reply; never
    raises. `observation` is None when the reply holds no page (tree) or no delta that applies
    to `current` (delta).

    The body is what follows the first ``OBSERVATION:`` (tree) or ``CHANGES:`` (delta) line
    marker; without one, it starts at the first line that looks like the form (``[1] `` or
    ``Tab ``; a delta line). `cut`: the token limit stopped the reply mid-line, so its last
    line is dropped: small world models loop over repeated elements until the limit, and the
    cut last line alone would make the page unparsable (RESULTS.md R7).
    """
    text = text or ""
    marker, start = (_CHANGES_MARKER, _DELTA_START) if form == "delta" else (_OBSERVATION_MARKER, TREE_START)
    if (m := marker.search(text)) is not None:
        head, body = text[:m.start()], _clean_tree(text[m.end():])
    elif (m := start.search(text)) is not None:
        head, body = text[:m.start()], _clean_tree(text[m.start():])
    else:
        head, body = text, None
    if cut and body is not None:
        body = _clean_tree("\n".join(body.split("\n")[:-1]))
    rationale = _THOUGHT_LABEL.sub("", head.strip()).strip()
    page, ends, success = _read_body(body, form, current)
    return WMPrediction(rationale=rationale, observation=page, raw=text, cut=cut, ends=ends, success=success)


def _read_body(body: str | None, form: str, current: str | None) -> tuple[str | None, bool, bool | None]:
    """(page, ends, success) of a reply's body in `form`."""
    if body is None:
        return None, False, None
    if form == "delta":
        try:
            delta = parse_delta(body)
            return apply_delta(current or "", delta), delta.ends, delta.success
        except DeltaError:
            return None, False, None
    first, _, rest = body.partition("\n")
    ends, success = read_ends_line(first)
    page = _clean_tree(rest) if ends else body
    return page, ends, success


def outcome_probability(tokens: Sequence[TokenLogprob]) -> float | None:
    """P(success) / (P(success) + P(failure)) at the first word after the reply's first
    ``episode ends:`` (module docstring), from that token's alternatives; None when the reply
    has no such token or neither word begins any of them."""
    text = ""
    for token in tokens:
        if text.rstrip(" ").endswith(f"{ENDS}:") and token.token.strip():
            mass = {word: 0.0 for word in OUTCOMES}
            for alternative, logprob in (token.top or {token.token: token.logprob}).items():
                # An alternative counts for the word it begins: a tokenizer may split a word
                # (" f", "ail", ...); the two words begin with different letters.
                for word in mass:
                    if (start := alternative.strip().lower()) and word.startswith(start):
                        mass[word] += math.exp(logprob)
            total = sum(mass.values())
            return mass["success"] / total if total > 0 else None
        text += token.token
    return None


class WorldModel:
    """M_w behind the OpenAI API, predicting as the world-model section says: its reply form,
    rationale line, token cap, grammar and temperature (`greedy`: 0, as fidelity decodes);
    `outcome_probability`: ask for the outcome's probability (look-ahead's world-model scorer)."""

    def __init__(self, client: LLMClient, config: WorldModelConfig, *, greedy: bool = False,
                 outcome_probability: bool = False):
        self.client = client
        self.config = config
        self.temperature = 0.0 if greedy else config.temperature
        self.outcome_probability = outcome_probability

    async def predict(self, objective: str, start_url: str, past_actions: Sequence[str],
                      last_observation: str | None, action: str | None, *, seed: int | None = None) -> WMPrediction:
        """The page after `action` on `last_observation` (None, None: the first page; the tree
        form only), and whether the episode ends there."""
        form, thought = self.config.form, self.config.thought
        if form == "delta" and last_observation is None:
            raise ValueError("the delta form predicts the page after an action on a real or predicted page")
        messages = build_wm_messages(objective, start_url, past_actions, last_observation, action, form=form,
                                     thought=thought)
        completion = await self.client.chat(messages, temperature=self.temperature, max_tokens=self.config.max_tokens,
                                            seed=seed,
                                            regex=reply_regex(form, thought) if self.config.constrained else None,
                                            top_logprobs=OUTCOME_TOP_LOGPROBS if self.outcome_probability else 0)
        prediction = parse_wm_output(completion.text, form=form, current=last_observation,
                                     cut=completion.finish_reasons[:1] == ["length"])
        p_success = outcome_probability(completion.token_logprobs) if prediction.ends else None
        return replace(prediction, prompt_tokens=completion.prompt_tokens,
                       completion_tokens=completion.completion_tokens, p_success=p_success)


# -- transitions ---------------------------------------------------------------------------

def action_key(action: str | None) -> str:
    """The first two tokens of the action (``click [12]``), as the reference capped by."""
    return FIRST if action is None else " ".join(action.split()[:2])


def _trajectory_transitions(traj: TrajectoryRecord, steps: Sequence[StepRecord]) -> list[Transition]:
    def transition(step: int, past: Sequence[str], last: str | None, action: str | None, nxt: str) -> Transition:
        return Transition(trajectory_id=traj.trajectory_id, step=step, objective=traj.query,
                          start_url=steps[0].url, past_actions=tuple(past), last_observation=last,
                          action=action, next_observation=nxt, action_key=action_key(action), site=traj.site,
                          source=traj.source)

    out = [transition(steps[0].step, (), None, None, steps[0].observation)]
    past: list[str] = []
    for step, following in zip(steps, steps[1:]):
        if not step.action_valid or step.action is None:
            continue  # nothing happened to predict
        if following.step == step.step + 1:  # a missing step row breaks the chain
            out.append(transition(following.step, past, step.observation, step.action, following.observation))
        past.append(format_reply(step.thought, step.action) if step.thought else step.action)
    last = steps[-1]
    if traj.final_observation and last.action_valid and last.action is not None:
        # The page after the last action (kept for episodes that did not end with `stop`); the
        # page said the task is over when the episode ended "done".
        final = transition(last.step + 1, past, last.observation, last.action, traj.final_observation)
        if traj.stop_reason == "done":
            final = replace(final, ends=True, success=None if traj.gold_reward is None else traj.gold_reward >= 1)
        out.append(final)
    return out


def transitions_from_records(trajectories: Iterable[TrajectoryRecord],
                             steps: Iterable[StepRecord]) -> list[Transition]:
    """Every transition of every trajectory (module docstring, 1.), trajectory order kept."""
    by_traj = steps_by_trajectory(steps)
    out = []
    for traj in trajectories:
        traj_steps = sorted(by_traj.get(traj.trajectory_id, []), key=lambda s: s.step)
        if traj_steps:
            out += _trajectory_transitions(traj, traj_steps)
    return out


def predictable(transitions: Sequence[Transition], form: str) -> list[Transition]:
    """The transitions M_w predicts in `form`: the delta form has no first pages (it changes a
    page; synthesis and look-ahead start from real ones)."""
    return [t for t in transitions if form != "delta" or t.last_observation is not None]


def cap_transitions(transitions: Sequence[Transition], *, first_per_site: int = 20, per_action_key: int = 50,
                    limit: int | None = None, seed: int = 0) -> list[Transition]:
    """Deduplicated (same last observation, action and next observation: first one kept),
    then at most `first_per_site` first steps per site, `per_action_key` other transitions
    per action key and `limit` in all, chosen at random with `seed`; the result keeps the
    input order."""
    unique: dict[tuple, int] = {}
    for i, t in enumerate(transitions):
        unique.setdefault((t.last_observation, t.action, t.next_observation), i)
    order = list(unique.values())
    random.Random(seed).shuffle(order)
    taken: dict[tuple[str, str], int] = defaultdict(int)
    kept = []
    for i in order:
        t = transitions[i]
        group, cap = (("site", t.site), first_per_site) if t.action is None else (("key", t.action_key), per_action_key)
        if limit is not None and len(kept) >= limit:
            break
        if taken[group] < cap:
            taken[group] += 1
            kept.append(i)
    return [transitions[i] for i in sorted(kept)]


# -- rationales ----------------------------------------------------------------------------

def rationale_messages(t: Transition) -> list[dict]:
    """The base model's prompt to explain a (non-first) transition."""
    user = load_prompt("rationale_user", objective=t.objective, observation=t.last_observation,
                       action=t.action, next_observation=t.next_observation)
    return [{"role": "system", "content": load_prompt("rationale_system")}, {"role": "user", "content": user}]


RATIONALE_MAX_TOKENS = WorldModelConfig.rationale_max_tokens


async def distill_rationales(client: LLMClient, transitions: Sequence[Transition], *, concurrency: int = 4,
                             max_tokens: int = RATIONALE_MAX_TOKENS,
                             on_done: Callable[[int, int], None] | None = None) -> list[str | None]:
    """One rationale per transition, in order: the fixed one for first steps, else the base
    model's explanation at temperature 0; all None when `max_tokens` is 0 (no rationales).
    `on_done(done, total)` after each one (progress)."""
    if max_tokens == 0:
        return [None] * len(transitions)
    semaphore = asyncio.Semaphore(concurrency)
    done = 0

    async def one(t: Transition) -> str:
        nonlocal done
        if t.action is None:
            text = load_prompt("rationale_first", start_url=t.start_url)
        else:
            async with semaphore:
                completion = await client.chat(rationale_messages(t), temperature=0.0, max_tokens=max_tokens)
            # One line without a label: the target adds "THOUGHT: " and puts OBSERVATION on the next line.
            text = _THOUGHT_LABEL.sub("", " ".join(completion.text.split()))
        done += 1
        if on_done is not None:
            on_done(done, len(transitions))
        return text

    return list(await asyncio.gather(*(one(t) for t in transitions)))


# -- SFT examples --------------------------------------------------------------------------

def wm_sft_examples(transitions: Sequence[Transition], rationales: Sequence[str | None],
                    form: str = "tree") -> list[Example]:
    """Prompt-completion examples (the policy SFT format, `sft.to_sft_examples`) in M_w's form;
    rationales are all None (no rationale line) or all text."""
    if len(transitions) != len(rationales):
        raise ValueError(f"{len(transitions)} transitions but {len(rationales)} rationales")
    if len({r is None for r in rationales}) > 1:
        raise ValueError("rationales are all None or all text")
    thought = bool(rationales) and rationales[0] is not None
    return [{"prompt": build_wm_messages(t.objective, t.start_url, t.past_actions, t.last_observation, t.action,
                                         form=form, thought=thought),
             "completion": [{"role": "assistant", "content": format_wm_target(r, t, form)}],
             "trajectory_id": t.trajectory_id, "step": t.step, "source": t.source}
            for t, r in zip(transitions, rationales, strict=True)]


# -- Parquet -------------------------------------------------------------------------------

_TRANSITION_FIELDS = tuple(Transition.__dataclass_fields__)


def transitions_to_table(transitions: Sequence[Transition], rationales: Sequence[str | None], run_id: str, round: int,
                         stage: str) -> pa.Table:
    if len(transitions) != len(rationales):
        raise ValueError(f"{len(transitions)} transitions but {len(rationales)} rationales")
    rows: list[dict[str, Any]] = [
        {"run_id": run_id, "round": round, "stage": stage, "rationale": r}
        | {name: getattr(t, name) for name in _TRANSITION_FIELDS}
        for t, r in zip(transitions, rationales, strict=True)]
    table = pa.Table.from_pylist(rows, schema=WM_TRANSITION_SCHEMA)
    validate_table(table, WM_TRANSITION_SCHEMA)
    return table


def transitions_from_table(table: pa.Table) -> tuple[list[Transition], list[str | None]]:
    """(transitions, rationales) back from a table with the `WM_TRANSITION_SCHEMA` columns."""
    rows = table.select([*_TRANSITION_FIELDS, "rationale"]).to_pylist()
    transitions = [Transition(**{name: r[name] for name in _TRANSITION_FIELDS}
                              | {"past_actions": tuple(r["past_actions"])}) for r in rows]
    return transitions, [r["rationale"] for r in rows]
