"""Presets: the sizes of an evolution round, from a CI smoke run to GPUs.

| preset | model | backend | sizes | time |
| --- | --- | --- | --- | --- |
| smoke | tiny (random, built in seconds) | transformers on CPU | 4 demo tasks, 4 train, 4 test, 4 steps; synthesis for 2 failed queries | minutes on 2 cores |
| cpu | smollm2 (SmolLM2-135M-Instruct, embedded) | auto: vLLM's CPU build when `make setup-vllm` ran (one server a round, adapters hot-loaded; 2.4-4x today's replies/s in `bench serve`), else transformers with continuous batching | 140 demo (245 steps), 20 train x 2 samples, 40 test (10 seeds per task), 112 LoRA steps; synthesis for 4 failed queries; look-ahead d=1 on 4 test tasks; 20 episodes on 2 never-trained tasks | not yet timed end to end (DESIGN.md) |
| gpu | a large instruct model (a folder: no hub at run time) | vllm, adapters hot-loaded, tensor parallel | 200 demo, 500 train x 4, full test split; synthesis for all failed queries | GPU hours |

World-model sizes: synthesis covers `synth_queries` failed queries with at most
`synth_max_actions` policy actions (the paper's 7 on gpu; fewer on CPU, where each predicted
page takes SmolLM2 tens of seconds); look-ahead runs at each of `lookahead_depths` on
`lookahead_tasks` test tasks; fidelity scores `fidelity_transitions` held-out transitions.

Filtering (rejection sampling): the judge r̂ always runs and its agreement with the gold
rewards is reported, but on offline suites the small presets keep trajectories by the gold
reward: a 135M judge cannot tell success from failure, and training on its verdicts
would teach the policy noise. `filter="judge"` (the gpu preset, and the paper) uses r̂.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Mapping, get_type_hints

if TYPE_CHECKING:
    from evolver_core.llm import CallLimits


@dataclass(frozen=True)
class Preset:
    name: str
    model: str  # base model of policy and world model
    backend: str = "transformers"
    judge_model: str | None = None  # None: the base model judges
    suite: str = "miniwob"
    miniwob_tasks: str = "click-button,enter-text,login-user,click-link"
    demo_tasks: int = 4  # round 0: scripted-solver demonstrations (imitation learning)
    train_tasks: int = 4
    samples: int = 1
    temperature: float = 0.7
    test_tasks: int = 4
    max_steps: int = 4
    concurrency: int = 2
    shards: int = 1  # sampling shards (tasks of the flow's task runner)
    filter: str = "gold"  # "gold" or "judge"
    judge_max_tokens: int = 192  # reasoning, then the verdict; small CPU models otherwise ramble to the limit
    finetune_steps: int = 4
    max_length: int = 512
    learning_rate: float = 2e-4
    wm_finetune_steps: int = 2  # the world model M_w, trained each round on the union of its data
    wm_max_length: int = 1024  # its examples hold two pages (current and predicted)
    wm_max_tokens: int = 1024  # one predicted page (synthesis, look-ahead, fidelity)
    synth_queries: int | None = 2  # failed queries to synthesize for (None: all)
    synth_max_actions: int = 2  # policy actions per synthetic trajectory (the paper: 7)
    lookahead_depths: tuple[int, ...] = (1, 2)  # WMLA evaluations of the round's policy
    lookahead_tasks: int | None = None  # test tasks for them (None: test_tasks)
    lookahead_candidates: int = 3
    fidelity_transitions: int = 4  # held-out real transitions for STR / Sim. / O/A
    policy_max_tokens: int = 96  # one policy reply (long `type` texts and `stop [answer]`s need more)
    rationale_max_tokens: int = 256  # one distilled world-model rationale
    wm_transitions: int | None = None  # real transitions a round adds to M_w's data (None: all, capped per site)
    lookahead_temperature: float = 0.7  # the non-greedy look-ahead candidates (the paper's 0.7)
    round0: str = "demos"  # "demos": scripted demonstrations; "self": the base model samples and r̂ judges
    self_improve: bool = True  # from round 1, also train and evaluate the self-improve arm (real data only)
    generalization_tasks: str | None = None  # MiniWoB tasks never trained on, evaluated every round
    generalization_test_tasks: int = 0  # test episodes of them per round
    # What one model call may cost (`llm.CallLimits`): raise them where the CPU is slow.
    request_timeout_s: float = 45.0
    max_retries: int = 2
    step_deadline_s: float = 60.0
    episode_deadline_s: float = 600.0
    max_reply_chars: int = 16_000
    tensor_parallel_size: int = 1  # GPUs a vLLM server splits the base model over

    def call_limits(self) -> "CallLimits":
        from evolver_core.llm import CallLimits

        return CallLimits(request_timeout_s=self.request_timeout_s, max_retries=self.max_retries,
                          step_deadline_s=self.step_deadline_s, episode_deadline_s=self.episode_deadline_s,
                          max_reply_chars=self.max_reply_chars)

    def with_(self, **changes: Any) -> "Preset":
        """A copy with `changes` (None values: unchanged; use `override` to set a field to None)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def override(self, changes: Mapping[str, Any]) -> "Preset":
        """A copy with `changes` applied as given (None included), each validated against the
        field's type; an unknown field is an error that lists the fields."""
        from pydantic import TypeAdapter, ValidationError

        hints = get_type_hints(Preset)
        known = {f.name: hints[f.name] for f in fields(self)}
        out = {}
        for key, value in changes.items():
            if key not in known or key == "name":
                raise ValueError(f"unknown preset field {key!r}; the fields are: "
                                 f"{', '.join(n for n in known if n != 'name')}")
            if isinstance(value, str):
                value = _from_text(known[key], value)
            try:
                out[key] = TypeAdapter(known[key]).validate_python(value)
            except ValidationError as exc:
                raise ValueError(f"preset field {key!r} ({known[key]}): {exc.errors()[0]['msg']}, "
                                 f"got {value!r}") from None
        if out.get("round0", self.round0) not in ("demos", "self"):
            raise ValueError(f"round0 must be 'demos' or 'self', not {out['round0']!r}")
        return replace(self, **out)


def parse_setting(text: str) -> tuple[str, str]:
    """`key=value` from the command line (`evolve --set`); `Preset.override` types the value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected key=value, got {text!r}")
    return key.strip(), raw.strip()


def _from_text(field_type: Any, raw: str) -> Any:
    """A command-line value for a field: `none`/`null` is None; for fields that are not plain
    strings, JSON where it parses (2, 0.5, true, [1, 2]) and a comma list otherwise."""
    import json

    if raw.lower() in ("none", "null"):
        return None
    if field_type is str or field_type == str | None:
        return raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return [p.strip() for p in raw.split(",") if p.strip()] if "," in raw else raw
    return [value] if "tuple" in str(field_type) and not isinstance(value, list) else value


PRESETS: dict[str, Preset] = {
    "smoke": Preset(name="smoke", model="tiny", max_length=384, wm_max_tokens=48),
    # Sized from the measured recipe (DESIGN.md): ~240 demonstration steps and 112 LoRA steps
    # make SmolLM2 solve enter-text and login-user and sometimes click-button / click-link, which
    # leaves round 1 something to learn; 10 test seeds per task; two never-trained tasks.
    "cpu": Preset(name="cpu", model="smollm2", backend="auto", demo_tasks=140, train_tasks=20,
                  samples=2, test_tasks=40, max_steps=5, judge_max_tokens=64, finetune_steps=112,
                  wm_finetune_steps=24, wm_max_length=768, wm_max_tokens=256, rationale_max_tokens=48,
                  wm_transitions=40,
                  synth_queries=4, synth_max_actions=3, lookahead_depths=(1,), lookahead_tasks=4,
                  fidelity_transitions=6, generalization_tasks="click-dialog,focus-text",
                  generalization_test_tasks=20, request_timeout_s=300, step_deadline_s=600,
                  episode_deadline_s=3600),
    # A model FOLDER (no hub at run time): infra/k8s/ mounts the weights at /models.
    "gpu": Preset(name="gpu", model="/models/Qwen2.5-7B-Instruct", backend="vllm", tensor_parallel_size=1,
                  suite="sandbox", demo_tasks=200,
                  train_tasks=500, samples=4, test_tasks=135, max_steps=12, concurrency=8, shards=8,
                  filter="judge", judge_max_tokens=1000, finetune_steps=600, max_length=4096, miniwob_tasks="easy",
                  wm_finetune_steps=300, wm_max_length=8192, wm_max_tokens=2048, synth_queries=None,
                  synth_max_actions=7, lookahead_tasks=None, fidelity_transitions=200, policy_max_tokens=512),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
