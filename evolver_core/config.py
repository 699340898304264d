"""Every configuration record, declared once: the preset sections and the model specs.

A preset (`evolver_core.presets`) is a base model plus one object per section; stages take
the section they need whole, the flows take the sections as parameters (the Prefect UI shows
each as a form and validates it), and every default lives here, in the field that declares it.

| section | what it sizes | read by |
| --- | --- | --- |
| `SamplingConfig` | episodes: suite, tasks, steps, sampling temperature, concurrency | `sample`, `synthesize`, every evaluation |
| `EvaluationConfig` | the test split and the never-trained generalization tasks | the round's evaluations |
| `JudgeConfig` | r̂: its model, whether it filters, its reply length | `judge`, `synthesize`, look-ahead |
| `TrainingConfig` | a LoRA fine-tune (TRL / PEFT names) | `finetune` (policies), `finetune_wm` (via `WorldModelConfig.training`) |
| `WorldModelConfig` | M_w: its data, training, page length, synthesis, fidelity | `wm_data`, `finetune_wm`, `synthesize`, `fidelity` |
| `LookaheadConfig` | world-model look-ahead at inference | `eval-wmla<d>` |
| `CallLimits` | what one model call and one episode may cost | every client (`llm.use_limits`) |

`ModelSpec` says which model serves a role and through which backend (`infra.serving.serve`
turns it into an OpenAI-compatible endpoint); `LookaheadSpec` is one look-ahead evaluation's
models and depth. Keys are never stored here: only the name of the variable that holds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional


@dataclass(frozen=True)
class SamplingConfig:
    """How episodes are played: real sampling of training tasks, and (`greedy_once`) the
    scripted demonstrations and every evaluation."""

    suite: str = "miniwob"
    miniwob_tasks: str = "easy"  # MiniWoB tasks: easy (the solver-backed subset), all, or a comma list
    max_steps: int = 12  # step limit per episode
    concurrency: int = 2  # browser contexts; beyond 2 the CPU is the limit on 2 cores
    shards: int = 1  # sampling shards (tasks of the flow's task runner)
    samples: int = 1  # trajectories per training task
    temperature: float = 0.7  # training-task sampling; evaluations decode greedily
    policy_max_tokens: int = 96  # one policy reply (long `type` texts and `stop [answer]`s need more)
    round0: str = "demos"  # "demos": scripted demonstrations; "self": the base model samples and r̂ judges
    demo_tasks: int = 4  # round 0 with demos: scripted-solver demonstrations (imitation learning)
    train_tasks: int = 4  # training tasks the policy samples from round 1 on (and round 0 with "self")

    def __post_init__(self) -> None:
        if self.round0 not in ("demos", "self"):
            raise ValueError(f"round0 must be 'demos' or 'self', not {self.round0!r}")

    def greedy_once(self, **changes: Any) -> "SamplingConfig":
        """The same episodes decoded greedily, one per task, in one shard (evaluations; the
        scripted demonstrations)."""
        return replace(self, samples=1, temperature=0.0, shards=1, **changes)

    def trajectory_params(self, with_policy: bool) -> dict:
        """What of this section the trajectories depend on (a stage identity's part): not the
        concurrency, nor the task counts (the stage names the count it samples)."""
        return {"suite": self.suite, "miniwob_tasks": self.miniwob_tasks, "samples": self.samples,
                "max_steps": self.max_steps, "shards": self.shards,
                "sampling": {"temperature": self.temperature, "max_tokens": self.policy_max_tokens}
                if with_policy else None}


@dataclass(frozen=True)
class EvaluationConfig:
    """What each round is evaluated on (with `SamplingConfig.greedy_once`)."""

    test_tasks: Optional[int] = 4  # test-split tasks (None: the whole split)
    generalization_tasks: Optional[str] = None  # MiniWoB tasks never trained on, evaluated every round
    generalization_test_tasks: int = 0  # test episodes of them per round


@dataclass(frozen=True)
class JudgeConfig:
    """The judge r̂ (rejection sampling, synthetic trajectories, look-ahead scores)."""

    model: Optional[str] = None  # None: the base model judges
    filter: str = "gold"  # "gold": offline suites keep by the gold reward (r̂ still runs and is scored); "judge": r̂
    max_tokens: int = 192  # reasoning, then the verdict; small CPU models otherwise ramble to the limit
    scorer_max_tokens: int = 256  # one look-ahead score

    def __post_init__(self) -> None:
        if self.filter not in ("gold", "judge"):
            raise ValueError(f"judge filter must be 'gold' or 'judge', not {self.filter!r}")


LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass(frozen=True)
class TrainingConfig:
    """A LoRA fine-tune from the base model (TRL `SFTConfig` / PEFT `LoraConfig` names where
    they exist; `training.finetune` builds both from it). The defaults are the settings
    measured on a 2-core CPU (DESIGN.md): rank 16, alpha 32, lr 2e-4 constant after 5 warm-up
    steps, batch 2, fp32, gradient checkpointing off (on that CPU it made a step ~2.4x slower)."""

    max_steps: int = -1  # steps to train; -1: num_train_epochs decides
    max_length: int = 512  # tokens of prompt and reply; longer examples are cut from the left
    learning_rate: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = LORA_TARGETS  # comma list: every attention and MLP projection
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps: int = 5
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    bf16: bool = False  # bf16 mixed precision (GPUs); weights stay fp32
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1


@dataclass(frozen=True)
class WorldModelConfig:
    """The world model M_w (paper 3.2-3.4): its data, its training, and its uses."""

    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(max_steps=2, max_length=1024))
    max_tokens: int = 1024  # one predicted page (synthesis, look-ahead, fidelity)
    rationale_max_tokens: int = 256  # one distilled rationale
    transitions: Optional[int] = None  # real transitions a round adds to M_w's data (None: all, capped per site)
    first_per_site: int = 20  # start pages kept per site
    per_action_key: int = 50  # transitions kept per (site, action kind)
    synth_queries: Optional[int] = 2  # failed queries to synthesize for (None: all)
    synth_max_actions: int = 7  # policy actions per synthetic trajectory (the paper's and reference's limit)
    synth_samples: int = 1  # synthetic trajectories per failed query
    fidelity_transitions: int = 4  # held-out real transitions for STR / Sim. / O/A


@dataclass(frozen=True)
class LookaheadConfig:
    """World-model look-ahead (WMLA) evaluations of each round's policy."""

    depths: tuple[int, ...] = (1, 2)  # one evaluation per depth d (the paper: 1, 2, 3)
    tasks: Optional[int] = None  # test tasks for them (None: the evaluation's test_tasks)
    candidates: int = 3
    temperature: float = 0.7  # the non-greedy candidates (the paper's 0.7)


@dataclass(frozen=True)
class CallLimits:
    """What one model call may cost (`evolver_core.llm`'s docstring).

    With the defaults a silent endpoint costs one request 45 s, its retry is cut by the 60 s
    deadline, and the episode ends there: about a minute. Raise `request_timeout_s` (and the
    deadline) for servers that take longer than 45 s to generate one reply (long world-model
    pages on a busy CPU).
    """

    request_timeout_s: float = 45.0  # one HTTP request (the openai client's `timeout`)
    max_retries: int = 2  # the openai client's `max_retries`; also for replies that are not chat completions
    step_deadline_s: float = 60.0  # one request with all its attempts and backoff (asyncio timeout)
    episode_deadline_s: float = 600.0  # all model calls of one episode (applied by the rollout)
    max_reply_chars: int = 16_000  # longer completion texts are cut, the cut marked


@dataclass(frozen=True)
class ModelSpec:
    model: str = "smollm2"  # "tiny", "smollm2", a model folder, an adapter folder, or a remote model name
    backend: str = "transformers"  # transformers (CPU default) | vllm (GPUs) | openai (any external endpoint)
    adapter: str | None = None  # a LoRA adapter folder to serve on top of `model`
    base_url: str | None = None  # for backend=openai
    api_key_env: str | None = "OPENAI_API_KEY"  # for backend=openai; None: no key

    def same_server(self, other: "ModelSpec") -> bool:
        return self == other


@dataclass(frozen=True)
class LookaheadSpec:
    """One look-ahead evaluation: `depth` simulated steps per candidate, with these models."""

    world_model: ModelSpec
    scorer: ModelSpec  # rates each simulation 0 / 0.5 / 1
    depth: int = 1
    candidates: int = LookaheadConfig.candidates
    wm_max_tokens: int = WorldModelConfig.max_tokens  # one predicted page
    scorer_max_tokens: int = JudgeConfig.scorer_max_tokens
    candidate_temperature: float = LookaheadConfig.temperature

    @classmethod
    def of(cls, world_model: ModelSpec, scorer: ModelSpec, depth: int, lookahead: LookaheadConfig,
           wm: WorldModelConfig, judge: JudgeConfig) -> "LookaheadSpec":
        return cls(world_model=world_model, scorer=scorer, depth=depth, candidates=lookahead.candidates,
                   wm_max_tokens=wm.max_tokens, scorer_max_tokens=judge.scorer_max_tokens,
                   candidate_temperature=lookahead.temperature)
