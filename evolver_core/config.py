"""Every configuration record, declared once: the preset sections and the model specs.

A preset (`evolver_core.presets`) is a base model plus one object per section; stages take
the section they need whole, the flows take the whole preset as a parameter (the Prefect UI
shows it as a form and validates it), and every default lives here, in the field that
declares it.

- `SamplingConfig`: episodes (suite, tasks, steps, sampling temperature, concurrency); read by
  `sample`, `synthesize`, every evaluation.
- `EvaluationConfig`: the test split and the never-trained generalization tasks; the round's
  evaluations, `webevolver eval`.
- `JudgeConfig`: r̂ (its model, whether it filters, its reply length); `judge`, `synthesize`,
  look-ahead.
- `TrainingConfig`: a LoRA fine-tune (TRL / PEFT names); `finetune` (policies), `finetune_wm`
  (via `WorldModelConfig.training`).
- `WorldModelConfig`: M_w (its data, training, page length and temperature, synthesis,
  fidelity); `wm_data`, `finetune_wm`, `synthesize`, `fidelity`, look-ahead.
- `LookaheadConfig`: world-model look-ahead at inference; `eval-wmla<d>`, `webevolver eval
  --lookahead-depth`.
- `CallLimits`: what one model call and one episode may cost; every client (`llm.use_limits`).

Every field is declared with `setting(default, help, allowed)`: `help` says what it means
(`webevolver presets`, `python -m evolver_core.training.finetune --help`), `allowed` which
values a run can use. A section checks its fields when it is built (`Checked`), whether from
code, `--set` or a flow run's JSON, so a bad value is refused before anything runs, in one
line that names the field and its range.

`ModelSpec` says which model serves a role and through which backend (`infra.serving.serve`
turns it into an OpenAI-compatible endpoint); `evolver_core.agents.lookahead.LookaheadSpec`
is one look-ahead evaluation: its models, its depth and the sections it reads, whole. Keys
are never stored here: only the name of the variable that holds one.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Allowed:
    """The values a run can use for a field: numbers in [`low`, `high`] (`low_open`: above
    `low`), finite; one of `choices`; or names that must exist (`names`: "suite" or
    "miniwob_tasks"). Names are the suites' code, which this module may not import:
    `evolver_core.presets.name_problem` looks them up for every preset, `--set` and flow
    parameter. None is left to the field's type; a tuple is checked element by element."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    names: str | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` cannot be used ("must be ..., got ..."), or None."""
        if value is None:
            return None
        if isinstance(value, tuple):
            return next((p for p in map(self.problem, value) if p), None)
        if self.names:
            return None
        if self.choices:
            return None if value in self.choices else f"must be {self.describe()}, got {value!r}"
        bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or (
            self.low is not None and (value <= self.low if self.low_open else value < self.low)) or (
            self.high is not None and value > self.high)
        return f"must be {self.describe()}, got {value!r}" if bad else None

    def describe(self) -> str:
        if self.names:
            return NAMES[self.names]
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is None:
            return low or "finite"
        return f"{self.low:g} to {self.high:g}" if low and not self.low_open else f"{low}, <= {self.high:g}"


NAMES = {"suite": "a suite's name (evolver_core.suites.registry.SUITES)",
         "miniwob_tasks": "easy, all, or a comma list of MiniWoB task names"}


WM_FORMS = ("delta", "tree")  # what the world model writes (`WorldModelConfig.form`)
POSITIVE = Allowed(low=1)
NOT_NEGATIVE = Allowed(low=0)
TEMPERATURE = Allowed(low=0, high=2)  # the OpenAI API's range
SECONDS = Allowed(low=0, low_open=True)


def setting(default: Any = MISSING, help: str = "", *, allowed: Allowed | None = None,
            factory: Callable[[], Any] | None = None, identity: bool = True) -> Any:
    """A config field: its default (or `factory`), what it means, and the values a run can use;
    `identity` False: it only chooses which stages run (their own parameters say what it
    changes), so `identity_params` leaves it out."""
    metadata = {"help": help, "identity": identity} | ({"allowed": allowed} if allowed else {})
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def identity_params(section: Any) -> dict:
    """The fields of `section` that change what a stage computes (a stage identity's part)."""
    return {f.name: getattr(section, f.name) for f in fields(section) if f.metadata["identity"]}


def field_problem(f: Any, value: Any) -> str | None:
    """Why `value` cannot be used for the dataclass field `f` (its `allowed` metadata), or None."""
    allowed = f.metadata.get("allowed")
    return allowed.problem(value) if allowed else None


class Checked:
    """Checks every field's `allowed` values when a record is built: from code, from `--set`
    (`Preset.override`), or from a flow run's JSON (pydantic runs `__post_init__`)."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            if problem := field_problem(f, getattr(self, f.name)):
                raise ValueError(f"{type(self).__name__}.{f.name} {problem}")


@dataclass(frozen=True)
class SamplingConfig(Checked):
    """How episodes are played: real sampling of training tasks, and (`greedy_once`) the
    scripted demonstrations and every evaluation."""

    suite: str = setting("miniwob", "Task suite the episodes come from: miniwob, sandbox, or a live one "
                         "(webvoyager, mind2web-live, gaia-web, openwebvoyager; needs internet).",
                         allowed=Allowed(names="suite"))
    miniwob_tasks: str = setting("easy", "MiniWoB tasks: easy (the solver-backed subset), all, or a comma list.",
                                 allowed=Allowed(names="miniwob_tasks"))
    max_steps: int = setting(12, "Step limit per episode (the reference's MAX_STEPS).", allowed=POSITIVE)
    concurrency: int = setting(2, "Browser contexts at a time; beyond 2 the CPU is the limit on 2 cores.",
                               allowed=POSITIVE)
    shards: int = setting(1, "Sampling shards (tasks of the flow's task runner).", allowed=POSITIVE)
    samples: int = setting(1, "Trajectories per training task (k, for rejection sampling).", allowed=POSITIVE)
    temperature: float = setting(0.7, "Policy temperature when sampling training tasks; evaluations and "
                                 "demonstrations decode greedily.", allowed=TEMPERATURE)
    policy_max_tokens: int = setting(96, "Tokens of one policy reply (long `type` texts and `stop [answer]`s "
                                     "need more).", allowed=POSITIVE)
    constrained: bool = setting(True, "Decode the policy's replies within the action grammar (REPLY_REGEX) where "
                                "the server has structured outputs (vLLM); other servers decode freely.")
    round0: str = setting("demos", "Round 0: demos (scripted demonstrations) or self (the base model samples "
                          "and r-hat judges).", allowed=Allowed(choices=("demos", "self")))
    demo_tasks: int = setting(4, "Round 0 with demos: scripted-solver demonstrations (imitation learning).",
                              allowed=POSITIVE)
    demo_explore: int = setting(0, "Round 0 with demos: exploring episodes per demonstration task, beside it: the "
                                "scripted solver with half its actions a random click (seeded). The world model "
                                "learns from them how wrong actions end; the policy never trains on them.",
                                allowed=NOT_NEGATIVE)
    train_tasks: int = setting(4, "Training tasks the policy samples from round 1 on (and round 0 with self).",
                               allowed=POSITIVE)

    def greedy_once(self, **changes: Any) -> "SamplingConfig":
        """The same episodes decoded greedily, one per task, in one shard, none exploring
        (evaluations)."""
        return replace(self, samples=1, temperature=0.0, shards=1, demo_explore=0, **changes)

    def demonstrations(self) -> "SamplingConfig":
        """Round 0's scripted episodes: each task's demonstration (sample 0) and its
        `demo_explore` explorations (samples 1..), greedy, in one shard."""
        return replace(self.greedy_once(), samples=1 + self.demo_explore, demo_explore=self.demo_explore)

    def explores(self, sample: int) -> bool:
        """Whether scripted episode `sample` of a task explores (the last `demo_explore`)."""
        return sample >= self.samples - self.demo_explore

    def trajectory_params(self, with_policy: bool) -> dict:
        """What of this section the trajectories depend on (a stage identity's part): not the
        concurrency, nor the task counts (the stage names the count it samples)."""
        return {"suite": self.suite, "miniwob_tasks": self.miniwob_tasks, "samples": self.samples,
                "max_steps": self.max_steps, "shards": self.shards,
                "explore": None if with_policy else self.demo_explore,
                "sampling": {"temperature": self.temperature, "max_tokens": self.policy_max_tokens,
                             "constrained": self.constrained} if with_policy else None}


@dataclass(frozen=True)
class EvaluationConfig(Checked):
    """What each round is evaluated on (with `SamplingConfig.greedy_once`), and what `webevolver
    eval` evaluates by default."""

    test_tasks: Optional[int] = setting(20, "Test-split tasks evaluated (none: the whole split).", allowed=POSITIVE)
    generalization_tasks: Optional[str] = setting(None, "MiniWoB tasks never trained on, evaluated every round "
                                                  "(none: no generalization evaluation).",
                                                  allowed=Allowed(names="miniwob_tasks"))
    generalization_test_tasks: int = setting(0, "Test episodes of the generalization tasks per round (0: none).",
                                             allowed=NOT_NEGATIVE)


@dataclass(frozen=True)
class JudgeConfig(Checked):
    """The judge r̂ (rejection sampling, synthetic trajectories, look-ahead scores)."""

    model: Optional[str] = setting(None, "Judge model (none: the base model judges).")
    filter: str = setting("gold", "Which trajectories are kept: gold (offline suites keep by the gold reward; "
                          "r-hat still runs and is scored) or judge (r-hat's verdicts).",
                          allowed=Allowed(choices=("gold", "judge")))
    max_tokens: int = setting(192, "Tokens of one verdict (reasoning, then the verdict; small CPU models "
                              "otherwise ramble to the limit).", allowed=POSITIVE)
    scorer_max_tokens: int = setting(256, "Tokens of one look-ahead score.", allowed=POSITIVE)


LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass(frozen=True)
class TrainingConfig(Checked):
    """A LoRA fine-tune from the base model (TRL `SFTConfig` / PEFT `LoraConfig` names where
    they exist; `training.finetune` builds both from it). The defaults are the recipe that made
    SmolLM2 learn on a 2-core CPU (RESULTS.md R1): rank 16, alpha 32, lr 2e-4 constant after 5
    warm-up steps, batch 2, fp32, gradient checkpointing off (it made a step over 2x slower)."""

    max_steps: Optional[int] = setting(None, "Optimizer steps to train (none: num_train_epochs decides).",
                                       allowed=POSITIVE)
    max_length: int = setting(512, "Tokens of prompt and reply; longer examples are cut from the left.",
                              allowed=POSITIVE)
    learning_rate: float = setting(2e-4, "Peak learning rate.", allowed=Allowed(low=0, low_open=True))
    lora_r: int = setting(16, "LoRA rank.", allowed=POSITIVE)
    lora_alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / r).", allowed=POSITIVE)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA layers' input.", allowed=Allowed(low=0, high=1))
    target_modules: str = setting(LORA_TARGETS, "Comma list of the modules LoRA adapts (default: every attention "
                                  "and MLP projection).")
    lr_scheduler_type: str = setting("constant_with_warmup", "Learning-rate schedule (transformers' names).")
    warmup_steps: int = setting(5, "Steps of linear warm-up.", allowed=NOT_NEGATIVE)
    per_device_train_batch_size: int = setting(2, "Examples per step and device.", allowed=POSITIVE)
    gradient_accumulation_steps: int = setting(1, "Steps whose gradients are summed before an update.",
                                               allowed=POSITIVE)
    num_train_epochs: float = setting(1.0, "Passes over the examples (when max_steps is none).",
                                      allowed=Allowed(low=0, low_open=True))
    bf16: bool = setting(False, "bf16 mixed precision (GPUs); the weights stay fp32.")
    gradient_checkpointing: bool = setting(False, "Recompute activations in the backward pass (less memory, "
                                           "slower: ~2.4x per step on a 2-core CPU).")
    seed: int = setting(0, "Seed of the data order and the LoRA initialization.")
    logging_steps: int = setting(1, "Steps between loss logs (and progress updates).", allowed=POSITIVE)


@dataclass(frozen=True)
class WorldModelConfig(Checked):
    """The world model M_w (paper 3.2-3.4): its data, its training, and its uses."""

    training: TrainingConfig = setting(help="M_w's LoRA fine-tune.",
                                       factory=lambda: TrainingConfig(max_steps=2, max_length=1024))
    form: str = setting("delta", "What M_w writes: delta (new, removed and updated elements by id, or that the "
                        "episode ends; the whole page only when it is replaced; applied to the current page in "
                        "code) or tree (the paper's whole next page).", allowed=Allowed(choices=WM_FORMS))
    max_tokens: int = setting(1024, "Tokens of one prediction (synthesis, look-ahead, fidelity).",
                              allowed=POSITIVE)
    temperature: float = setting(0.7, "M_w's temperature predicting pages for synthesis and look-ahead "
                                 "(fidelity decodes greedily).", allowed=TEMPERATURE)
    rationale_max_tokens: int = setting(256, "Tokens of one distilled rationale (0: none: M_w writes the changes or "
                                        "the page alone).", allowed=NOT_NEGATIVE)
    constrained: bool = setting(True, "Decode M_w's replies within their grammar (DELTA_REGEX / the page's) where "
                                "the server has structured outputs (vLLM).")
    transitions: Optional[int] = setting(None, "Real transitions a round adds to M_w's data (none: all, capped "
                                         "per site).", allowed=POSITIVE)
    first_per_site: int = setting(20, "Start pages kept per site.", allowed=POSITIVE)
    per_action_key: int = setting(50, "Transitions kept per (site, action kind).", allowed=POSITIVE)
    synth_queries: Optional[int] = setting(2, "Failed queries to synthesize for (none: all; 0: no synthesis).",
                                           allowed=NOT_NEGATIVE)
    synth_max_actions: int = setting(7, "Policy actions per synthetic trajectory (the paper's and the "
                                     "reference's limit).", allowed=POSITIVE)
    synth_samples: int = setting(1, "Synthetic trajectories per failed query.", allowed=POSITIVE)
    synth_filter: str = setting("judge", "Which synthetic trajectories are kept: judge (r-hat, the paper's; live "
                                "sites) or replay (their actions replayed on the real page of the same task and "
                                "seed, kept when the page rewards them; suites with a programmatic reward).",
                                allowed=Allowed(choices=("judge", "replay")))
    fidelity_transitions: int = setting(4, "Held-out real transitions scored for STR / Sim. / O/A.",
                                        allowed=POSITIVE)

    @property
    def thought(self) -> bool:
        """M_w writes a rationale line first: rationales are distilled for it."""
        return self.rationale_max_tokens > 0

    def prediction_params(self, greedy: bool = False) -> dict:
        """What of this section M_w's predictions depend on (a stage identity's part;
        `greedy`: decoded at temperature 0, as fidelity does)."""
        return {"form": self.form, "max_tokens": self.max_tokens, "thought": self.thought,
                "constrained": self.constrained} | ({} if greedy else {"temperature": self.temperature})


@dataclass(frozen=True)
class LookaheadConfig(Checked):
    """World-model look-ahead (WMLA) evaluations of each round's policy."""

    depths: tuple[int, ...] = setting((1, 2), "One evaluation per depth d, each 1 to 3 (the paper: 1, 2, 3); "
                                      "empty: none.", allowed=Allowed(low=1, high=3), identity=False)
    tasks: Optional[int] = setting(None, "Test tasks of the look-ahead evaluations (none: the evaluation's "
                                   "test_tasks).", allowed=POSITIVE, identity=False)
    headroom_tasks: Optional[str] = setting(None, "MiniWoB tasks the look-ahead evaluations run on, e.g. those with "
                                           "headroom (none: the evaluation's); plain decoding runs on the same "
                                           "episodes beside them (eval-plain) for the paired difference.",
                                           allowed=Allowed(names="miniwob_tasks"), identity=False)
    candidates: int = setting(3, "Candidate actions per step: the greedy one, the rest sampled.", allowed=POSITIVE)
    temperature: float = setting(0.7, "Temperature of the non-greedy candidates (the paper's 0.7).",
                                 allowed=TEMPERATURE)
    margin: float = setting(0.0, "How much higher than the greedy candidate's score another candidate's must be "
                            "to replace it (0: the highest wins, ties to the greedy one, the paper's).",
                            allowed=Allowed(low=0, high=1))
    rollout_temperature: float = setting(0.7, "The policy's temperature inside a simulation of depth > 1.",
                                         allowed=TEMPERATURE)
    scorer: str = setting("llm", "What scores a simulation: llm (the judge model rates it 0 / 0.5 / 1, the "
                          "paper's) or world_model (a predicted end scores M_w's probability that it is a "
                          "success, read from the server's token log-probabilities, else 1 / 0 by the outcome "
                          "it wrote; not yet ended: 0.5; works with small models).",
                          allowed=Allowed(choices=("llm", "world_model")))


@dataclass(frozen=True)
class CallLimits(Checked):
    """What one model call may cost (`evolver_core.llm`'s docstring).

    With the defaults a silent endpoint costs one request 45 s, its retry is cut by the 60 s
    deadline, and the episode ends there: about a minute. Raise `request_timeout_s` (and the
    deadline) for servers that take longer than 45 s to generate one reply (long world-model
    pages on a busy CPU).
    """

    request_timeout_s: float = setting(45.0, "Seconds one HTTP request may take (the openai client's timeout).",
                                       allowed=SECONDS)
    max_retries: int = setting(2, "Retries of a failed request (the openai client's max_retries; also for "
                               "replies that are not chat completions).", allowed=NOT_NEGATIVE)
    step_deadline_s: float = setting(60.0, "Seconds one model call may take with all its attempts and backoff, "
                                     "and one reset or step of an episode's page (past it, an error episode).",
                                     allowed=SECONDS)
    episode_deadline_s: float = setting(600.0, "Seconds all model calls of one episode may take; past it, it is "
                                        "an error episode.", allowed=SECONDS)
    max_reply_chars: int = setting(16_000, "Characters of a completion kept; longer ones are cut, the cut marked.",
                                   allowed=POSITIVE)


@dataclass(frozen=True)
class ModelSpec:
    model: str = setting("smollm2", "tiny (test fixture, built on demand), smollm2 (the embedded default), a model "
                         "folder, an adapter folder, or a remote model name.")
    backend: str = setting("transformers", "transformers (CPU default), transformers-cb (continuous batching), vllm "
                           "(GPUs, or its CPU build after `make setup-vllm`; adapters loaded at run time), auto (vllm "
                           "when installed, else transformers-cb), or openai (any OpenAI-compatible endpoint; give "
                           "its base URL).")
    adapter: str | None = setting(None, "A LoRA adapter folder to serve on top of `model`.")
    base_url: str | None = setting(None, "Endpoint for backend openai, e.g. https://api.openai.com/v1.")
    api_key_env: str | None = setting("OPENAI_API_KEY", "Environment variable holding the endpoint's API key "
                                      "(backend openai); none: no key.")

    def same_server(self, other: "ModelSpec") -> bool:
        return self == other
