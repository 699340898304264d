"""World-Model Look-Ahead (WMLA): pick the next action by simulating candidates with the world model.

At each step (reference notes section 9, with its faults fixed, notes 11.3):

1. Candidates: the policy's greedy reply (temperature 0), then `candidates - 1` replies
   sampled at `LookaheadConfig.temperature` (the paper's 0.7), each asked (prompt
   ``lookahead_different``) for an action different from the earlier ones. Where the policy
   decodes within the action grammar, the grammar holds that request too: a sampled candidate
   clicks only elements of the page no earlier candidate clicked
   (`contracts.actions.reply_regex`), because a small fine-tuned policy asked in words alone
   repeats its greedy action (RESULTS.md R17). Candidates are de-duplicated by PARSED action
   (the reference compared raw strings); unparsable ones are dropped unless none parse. If one
   remains it is taken without simulation.
2. Simulation, concurrently for all candidates: the world model predicts the page after the
   candidate's action; for depth d > 1 the policy acts on the predicted page (at
   `rollout_temperature`) and the WM predicts again, d pages at most. A simulation ends early
   on a `stop` or an unparsable policy action or WM output. `restart` leads to the episode's
   first page without asking the WM. A `stop` candidate is not simulated.
3. Scoring (`LookaheadConfig.scorer`): ``llm`` (the paper's): the scorer LLM rates each candidate 0
   (wrong), 0.5 (on track) or 1 (completes the task) from the objective, the current page,
   the candidate's reply and the simulated steps ("Step k: ..."); for a `stop` candidate it
   judges whether stopping now is right. An unparsable score counts 0. ``world_model``: the
   world model's own prediction decides (`world_model_score`): a predicted end scores its
   probability of success (`world_model.model.outcome_probability`, from the server's token
   log-probabilities), or 1 / 0 by the outcome it wrote where the server gives none; going on
   scores 0.5; a prediction that did not parse counts 0 and is not "parsed"; a `stop`
   candidate 0.5. Why: a small scorer LLM cannot rate, and a small world model writes
   "success" at every end while its probability still ranks ends (DESIGN.md, "Look-ahead").
4. Selection: the highest score; ties go to the earliest candidate, i.e. the greedy one, and
   so does a higher score by less than `margin` (`LookaheadConfig.margin`; 0, the paper's
   argmax, by default), so a scorer that barely sees the action does not override the
   policy on noise (RESULTS.md R19, R20).

The returned `Turn` is the chosen candidate's (its thought, action, prompt and reply), with
the tokens of all policy, world-model and scorer calls summed, and `Turn.sampling["lookahead"]`
holding every candidate, its simulation and its score, JSON-able, for inspection in the records.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from evolver_core.agents.policy import PolicyAgent
from evolver_core.config import JudgeConfig, LookaheadConfig, ModelSpec, WorldModelConfig, identity_params
from evolver_core.contracts.actions import (REPLY_REGEX, Action, ActionParseError, format_action, parse_action,
                                           reply_regex)
from evolver_core.contracts.agent import Turn
from evolver_core.contracts.episode import StepResult
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.prompt import PastStep, render_observation
from evolver_core.contracts.task import Task
from evolver_core.llm import LLMClient
from evolver_core.prompts import load_prompt
from evolver_core.world_model.model import WorldModel
from evolver_core.world_model.synthesis import wm_past_action

AGENT_STOPS = "(The agent stops here.)"
NO_PREDICTION = "(The world model could not predict the page.)"

# The last "Score:" of the reply counts: the thought before it may mention scores too.
_SCORE = re.compile(r"score[ \t*]*:[ \t*]*(\d+(?:\.\d+)?|\.\d+)", re.IGNORECASE)
# The scorer's reply as its prompt asks for it, for servers with structured outputs (always
# sent: the format is ours). The thought is bounded (~100 tokens) so a looping small model
# still reaches its grade within `scorer_max_tokens`.
SCORE_REGEX = r"Thought: [^\n]{1,400}\nScore: (0|0\.5|1)"


def _try_parse(text: str) -> Action | None:
    try:
        return parse_action(text)
    except ActionParseError:
        return None


def dedupe_candidates(actions: Sequence[str]) -> list[int]:
    """Indices of the candidates to keep: the first of each distinct parsed action, in
    order; unparsable actions are dropped, unless none parses (then the first is kept)."""
    seen: set[str] = set()
    kept = []
    for i, text in enumerate(actions):
        action = _try_parse(text)
        if action is not None and (key := format_action(action)) not in seen:
            seen.add(key)
            kept.append(i)
    return kept if kept or not actions else [0]


def parse_score(text: str) -> float | None:
    """The rating after the last ``Score:`` of a scorer reply; None when absent or outside [0, 1]."""
    matches = _SCORE.findall(text or "")
    if not matches:
        return None
    score = float(matches[-1])
    return score if 0.0 <= score <= 1.0 else None


def select_best(scores: Sequence[float], margin: float) -> int:
    """Index of the highest score; the earliest wins a tie (the greedy candidate comes first),
    and the first one also wins unless another beats it by `margin` or more."""
    if not scores:
        raise ValueError("no scores to select from")
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best if round(scores[best] - scores[0], 9) >= margin else 0  # 0.6 - 0.5 is 0.0999...


@dataclass(frozen=True)
class SimStep:
    """One simulated step: the action taken and the page the WM predicted after it
    (None: the agent stopped, or the WM's output did not parse), and whether the WM said the
    episode ends there (and how, with its probability of success where the server gave it)."""

    action: str
    page: str | None
    ends: bool = False
    success: bool | None = None
    p_success: float | None = None  # the world model's probability that the end is a success


def world_model_score(simulation: Sequence[SimStep]) -> float | None:
    """The world model's own verdict on a simulation (module docstring, 3.); None when its
    last prediction did not parse. No simulation (a `stop` candidate) is neutral."""
    if not simulation:
        return 0.5
    last = simulation[-1]
    if last.page is None and not last.action.startswith("stop"):
        return None
    if last.ends:
        return last.p_success if last.p_success is not None else {True: 1.0, False: 0.0, None: 0.5}[last.success]
    return 0.5


def render_simulation(steps: Sequence[SimStep]) -> str:
    """The simulated trajectory as the scorer reads it: "Step k: ..." blocks."""
    def result(s: SimStep) -> str:
        if s.page is not None:
            return load_prompt("lookahead_page", page=s.page)
        return AGENT_STOPS if s.action.startswith("stop") else NO_PREDICTION

    return "\n\n".join(load_prompt("lookahead_step", index=k, action=s.action, result=result(s))
                       for k, s in enumerate(steps, 1))


@dataclass
class _Evaluation:
    """One candidate through simulation and scoring; `asdict` of it goes into the records."""

    response: str
    action: str  # canonical when it parses, else as written
    temperature: float
    simulation: list[SimStep] = field(default_factory=list)
    simulated: bool = False
    score: float = 0.0
    score_parsed: float | None = None
    scorer_reply: str | None = None


@dataclass(frozen=True)
class LookaheadSpec:
    """One look-ahead evaluation: `depth` simulated steps per candidate, the world model that
    simulates and the model that scores (served by the stage), and the sections the agent
    reads, whole; `make_agent` builds its agent for an episode."""

    world_model: ModelSpec
    scorer: ModelSpec
    depth: int
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    wm: WorldModelConfig = field(default_factory=WorldModelConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    def __post_init__(self) -> None:
        if self.depth not in (1, 2, 3):
            raise ValueError(f"depth must be 1, 2 or 3, not {self.depth}")

    @property
    def scored_by_llm(self) -> bool:
        """The scorer model rates the simulations (else M_w's own prediction does: no scorer served)."""
        return self.lookahead.scorer == "llm"

    def identity_params(self) -> dict:
        """What of this spec the episodes depend on, but the models (the stage names their content)."""
        return {"depth": self.depth, "lookahead": identity_params(self.lookahead),
                "wm": self.wm.prediction_params(), "scorer_max_tokens": self.judge.scorer_max_tokens}

    def make_agent(self, policy: PolicyAgent, world_model: LLMClient, scorer: LLMClient | None) -> "LookaheadAgent":
        """The look-ahead agent of one episode: `policy` with M_w at `world_model` (asked for its
        outcome's probability where it scores) and `scorer` (None unless `scored_by_llm`)."""
        model = WorldModel(world_model, self.wm, outcome_probability=not self.scored_by_llm)
        return LookaheadAgent(self, policy, model, scorer)


class LookaheadAgent:
    """Implements `evolver_core.agents.oracle.Agent`: the policy's next step chosen by WMLA (module docstring).

    `policy` supplies the client, history length k, few-shot examples, max tokens and seed
    of the policy prompt; `world_model` simulates; `scorer` rates the simulations; `spec`
    says how (`LookaheadSpec.make_agent` is the one way to build it for an episode).
    """

    def __init__(self, spec: LookaheadSpec, policy: PolicyAgent, world_model: WorldModel, scorer: LLMClient | None):
        if spec.scored_by_llm and scorer is None:
            raise ValueError("the llm scorer needs a scorer client")
        self.spec = spec
        self.policy = policy
        self.world_model = world_model
        self.scorer = scorer
        self.name = f"wmla{spec.depth}:{policy.client.model}"

    def start(self, task: Task) -> None:
        self.policy.start(task)

    async def act(self, task: Task, obs: Observation, history: list) -> Turn:
        observation = render_observation(obs.text, obs.error)
        turns = await self._candidates(task.query, observation, [PastStep.from_step(s) for s in history],
                                       [e.id for e in obs.elements])
        kept = dedupe_candidates([t.action for t in turns])
        evaluations = [_Evaluation(response=turns[i].response or "", action=_canonical(turns[i].action),
                                   temperature=turns[i].sampling.get("temperature", 0.0)) for i in kept]
        tokens = [(t.prompt_tokens, t.completion_tokens) for t in turns]
        if len(kept) > 1:  # a single candidate is taken as it is
            for spent in await asyncio.gather(*(self._evaluate(task, obs, history, turns[i], ev, i)
                                                for i, ev in zip(kept, evaluations))):
                tokens += spent
        best = select_best([ev.score for ev in evaluations], self.spec.lookahead.margin)
        chosen = turns[kept[best]]
        record = {"depth": self.spec.depth, "chosen": best, "candidates": [asdict(ev) for ev in evaluations]}
        return Turn(thought=chosen.thought, action=chosen.action, model=chosen.model, response=chosen.response,
                    prompt=chosen.prompt, sampling=chosen.sampling | {"lookahead": record},
                    prompt_tokens=sum(p for p, _ in tokens), completion_tokens=sum(c for _, c in tokens))

    # -- internals -------------------------------------------------------------------------
    def _seed(self, offset: int) -> int | None:
        return None if self.policy.seed is None else self.policy.seed + offset

    async def _policy_turn(self, objective: str, observation: str, past: Sequence[PastStep], temperature: float,
                           seed: int | None, grammar: str = REPLY_REGEX) -> Turn:
        return await self.policy.reply(objective, observation, past, temperature=temperature, seed=seed,
                                       grammar=grammar)

    async def _candidates(self, objective: str, observation: str, past: Sequence[PastStep],
                          element_ids: Sequence[int]) -> list[Turn]:
        """The greedy reply, then sampled ones each asked to differ from those before it
        (one after another: each instruction, and the grammar, names the earlier actions)."""
        turns = [await self._policy_turn(objective, observation, past, 0.0, self._seed(0))]
        for i in range(1, self.spec.lookahead.candidates):
            previous = "; ".join(_canonical(t.action) for t in turns)
            clicked = {a.element_id for t in turns if (a := _try_parse(t.action)) is not None and a.name == "click"}
            asked = f"{observation}\n\n{load_prompt('lookahead_different', previous=previous)}"
            turns.append(await self._policy_turn(objective, asked, past, self.spec.lookahead.temperature, self._seed(i),
                                                 reply_regex(set(element_ids) - clicked)))
        return turns

    async def _evaluate(self, task: Task, obs: Observation, history: Sequence[StepResult], candidate: Turn,
                        ev: _Evaluation, index: int) -> list[tuple[int, int]]:
        """Simulate (unless it stops) and score one candidate, filling `ev`; returns the
        (prompt, completion) tokens spent."""
        tokens: list[tuple[int, int]] = []
        action = _try_parse(candidate.action)
        if action is not None and action.name != "stop":
            ev.simulated = True
            tokens += await self._simulate(task, obs, history, candidate, action, ev.simulation, index)
            simulation = render_simulation(ev.simulation)
        else:
            simulation = load_prompt("scorer_stop")
        if not self.spec.scored_by_llm:
            ev.score_parsed = world_model_score(ev.simulation)
            ev.score = ev.score_parsed or 0.0
            return tokens
        assert self.scorer is not None
        messages = [{"role": "system", "content": load_prompt("scorer_system")},
                    {"role": "user", "content": load_prompt("scorer_user", objective=task.query,
                                                            observation=render_observation(obs.text, obs.error),
                                                            response=candidate.response or "",
                                                            simulation=simulation)}]
        completion = await self.scorer.chat(messages, temperature=0.0, max_tokens=self.spec.judge.scorer_max_tokens,
                                            regex=SCORE_REGEX)
        ev.scorer_reply, ev.score_parsed = completion.text, parse_score(completion.text)
        ev.score = ev.score_parsed or 0.0
        return [*tokens, (completion.prompt_tokens, completion.completion_tokens)]

    async def _simulate(self, task: Task, obs: Observation, history: Sequence[StepResult], candidate: Turn,
                        action: Action, out: list[SimStep], index: int) -> list[tuple[int, int]]:
        """Up to `depth` WM pages after `action`, the policy acting on each but the last;
        appends to `out` and returns the (prompt, completion) tokens of the policy and the WM."""
        page = obs.text  # the WM predicts pages, not the executor's errors
        first_page = history[0].observation if history else page
        wm_past = [wm_past_action(s.turn.thought, s.action) for s in history if s.action is not None]
        policy_past = [PastStep.from_step(s) for s in history]
        error, thought, written, tokens = obs.error, candidate.thought, candidate.action, []
        for level in range(self.spec.depth):
            if action.name == "restart":
                step = SimStep(action=format_action(action), page=first_page)
            else:
                prediction = await self.world_model.predict(task.query, task.start_url, wm_past, page,
                                                            format_action(action), seed=self._seed(100 * index + level))
                step = SimStep(action=format_action(action), page=prediction.observation, ends=prediction.ends,
                               success=prediction.success, p_success=prediction.p_success)
                tokens.append((prediction.prompt_tokens, prediction.completion_tokens))
            out.append(step)
            nxt, ends = step.page, step.ends
            if nxt is None or ends or level == self.spec.depth - 1:
                break
            wm_past.append(wm_past_action(thought, action))
            policy_past.append(PastStep(observation=page, thought=thought, action=written, error_shown=error))
            turn = await self._policy_turn(task.query, nxt, policy_past, self.spec.lookahead.rollout_temperature,
                                           self._seed(100 * index + 10 + level))
            tokens.append((turn.prompt_tokens, turn.completion_tokens))
            parsed = _try_parse(turn.action)
            if parsed is None:
                break
            if parsed.name == "stop":
                out.append(SimStep(action=format_action(parsed), page=None))
                break
            page, error = nxt, None
            thought, written, action = turn.thought, turn.action, parsed
        return tokens


def _canonical(text: str) -> str:
    """The canonical action text when it parses, else the text as written."""
    action = _try_parse(text)
    return format_action(action) if action is not None else text
