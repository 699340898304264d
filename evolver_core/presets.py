"""Presets: the sizes of an evolution round, from a CI smoke run to GPUs.

- smoke: the tiny model (random, built in seconds), transformers on CPU; 4 demo tasks, 4 train,
  4 test, 4 steps; synthesis for 2 failed queries. Minutes on 2 cores.
- cpu: smollm2 (SmolLM2-135M-Instruct, embedded); backend auto: vLLM's CPU build when `make
  setup-vllm` ran (servers kept across a round's stages, adapters merged: LoRA modules are
  2-9x slower on CPU), else transformers with continuous batching; 140 demo (245 steps), 20
  train x 2 samples, 40 test (10 seeds per task), 112 LoRA steps; world model: 48 LoRA steps on
  96 transitions a round, delta form, no rationale; synthesis: 8 per failed query, up to 4
  actions, kept by replay; look-ahead d=1 on 4 test tasks, scored by the world model; 20
  episodes on 2 never-trained tasks; fidelity on 50 transitions. ~78 min on 2 cores (RESULTS.md).
- gpu: a large instruct model (a folder: no hub at run time), vllm with adapters hot-loaded and
  tensor parallel; 200 demo, 500 train x 4, the full test split; synthesis for all failed
  queries. GPU hours.

A preset is a base model, its backend and one object per section of `evolver_core.config`
(sampling, evaluation, judge, training, world_model, lookahead, limits); the defaults are the
sections' own. World-model sizes: synthesis covers `world_model.synth_queries` failed queries
with at most `synth_max_actions` policy actions (the paper's 7 on gpu; fewer on CPU, where
each predicted page takes SmolLM2 tens of seconds); look-ahead runs at each of
`lookahead.depths` on `lookahead.tasks` test tasks; fidelity scores `fidelity_transitions`
held-out transitions.

Filtering (rejection sampling): the judge r̂ always runs and its agreement with the gold
rewards is reported, but on offline suites the small presets keep trajectories by the gold
reward: a 135M judge cannot tell success from failure, and training on its verdicts
would teach the policy noise. `judge.filter="judge"` (the gpu preset, and the paper) uses r̂.

Changing a preset (`evolve --set key=value`, a flow's `overrides`): a key is a field's path,
`sampling.max_steps`, `world_model.training.max_steps`, or a field's name where only one
section has it (`train_tasks`, `synth_queries`); the value is typed and checked against the
field's type and its allowed values (`Preset.override`). `webevolver presets` lists every
field with its help, its allowed values and each preset's value.

A run's preset (`resolve_preset`) is a preset's name or a whole `Preset`, then `overrides`:
the CLI resolves it once and hands the flows the object; a deployment or the Prefect UI may
give a name plus overrides, which the flow resolves.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, fields, is_dataclass, replace
from operator import attrgetter
from typing import Any, Literal, Mapping, NamedTuple, Union, get_type_hints

from evolver_core.config import (NAMES, POSITIVE, Allowed, CallLimits, Checked, EvaluationConfig, JudgeConfig,
                                 LookaheadConfig, SamplingConfig, TrainingConfig, WorldModelConfig, field_problem,
                                 setting)


@dataclass(frozen=True)
class Preset(Checked):
    """A base model, its backend and one object per section (the module docstring)."""

    name: str = setting(help="The preset's name (shown in the round's summary).")
    model: str = setting(help="Base model of policy and world model (and judge, unless judge.model): tiny, "
                         "smollm2, or a model folder.")
    backend: str = setting("transformers", "transformers | transformers-cb | vllm | openai | auto (vLLM when "
                           "installed).", allowed=Allowed(choices=("transformers", "transformers-cb", "vllm",
                                                                   "openai", "auto")))
    tensor_parallel_size: int = setting(1, "GPUs a vLLM server splits the base model over.", allowed=POSITIVE)
    self_improve: bool = setting(True, "From round 1, also train and evaluate the self-improve arm (real data "
                                 "only).")
    sampling: SamplingConfig = setting(help="Episodes.", factory=SamplingConfig)
    evaluation: EvaluationConfig = setting(help="Evaluations.", factory=EvaluationConfig)
    judge: JudgeConfig = setting(help="The judge r-hat.", factory=JudgeConfig)
    training: TrainingConfig = setting(help="The policies' LoRA fine-tune.", factory=TrainingConfig)
    world_model: WorldModelConfig = setting(help="The world model.", factory=WorldModelConfig)
    lookahead: LookaheadConfig = setting(help="Look-ahead evaluations.", factory=LookaheadConfig)
    limits: CallLimits = setting(help="What a model call and an episode may cost.", factory=CallLimits)

    def __post_init__(self) -> None:
        super().__post_init__()
        for path, declared in field_paths().items():  # the names the sections cannot check themselves
            if declared.allowed and declared.allowed.names:
                if problem := name_problem(declared.allowed.names, attrgetter(path)(self)):
                    raise ValueError(f"preset field {path!r} {problem}")

    def override(self, changes: Mapping[str, Any]) -> "Preset":
        """A copy with `changes` (key: a field's path or unique name, see the module
        docstring) applied as given (None included), each validated against its field's type
        and allowed values; an unknown or ambiguous key is an error that lists the choices."""
        out: Preset = self
        for key, value in changes.items():
            path = resolve_key(key)
            out = _set(out, path, _validated(path, value))
        return out


class PresetField(NamedTuple):
    type: Any
    field: Field

    @property
    def help(self) -> str:
        return self.field.metadata["help"]

    @property
    def allowed(self) -> Allowed | None:
        return self.field.metadata.get("allowed")


def field_paths() -> dict[str, PresetField]:
    """Every settable field of a preset, by its dotted path: its type and declaration."""
    def walk(cls: type, prefix: str) -> dict[str, PresetField]:
        out: dict[str, PresetField] = {}
        hints = get_type_hints(cls)
        for f in fields(cls):
            if is_dataclass(hints[f.name]):
                out |= walk(hints[f.name], f"{prefix}{f.name}.")
            elif f.name != "name":
                out[prefix + f.name] = PresetField(hints[f.name], f)
        return out
    return walk(Preset, "")


def resolve_key(key: str) -> tuple[str, ...]:
    paths = field_paths()
    if key in paths:
        return tuple(key.split("."))
    matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return tuple(matches[0].split("."))
    if matches:
        raise ValueError(f"preset field {key!r} is in several sections; name one of: {', '.join(matches)}")
    raise ValueError(f"unknown preset field {key!r}; the fields are: {', '.join(paths)}")


def _validated(path: tuple[str, ...], value: Any) -> Any:
    """`value` typed by its field, and refused (naming the field) where no run can use it."""
    from pydantic import TypeAdapter, ValidationError

    name = ".".join(path)
    declared = field_paths()[name]
    if isinstance(value, str):
        value = _from_text(declared.type, value)
    try:
        typed = TypeAdapter(declared.type).validate_python(value)
    except ValidationError as exc:
        raise ValueError(f"preset field {name!r} ({declared.type}): {exc.errors()[0]['msg']}, "
                         f"got {value!r}") from None
    names = declared.allowed.names if declared.allowed else None
    if problem := field_problem(declared.field, typed) or (names and name_problem(names, typed)):
        raise ValueError(f"preset field {name!r} {problem}")
    return typed


def name_problem(kind: str, value: str | None) -> str | None:
    """Why `value` names no suite (`kind` "suite") or not only MiniWoB tasks ("miniwob_tasks",
    also "easy" or "all"), or None."""
    # The suites are imported here: only a check of a name needs their code.
    if value is None or (kind == "miniwob_tasks" and value in ("easy", "all")):
        return None
    if kind == "suite":
        from evolver_core.suites.registry import SUITES

        return None if value in SUITES else f"must be one of {', '.join(SUITES)}, got {value!r}"
    from evolver_core.suites.miniwob import all_task_names

    known = set(all_task_names())
    unknown = [n.strip() for n in value.split(",") if n.strip() not in known]
    return f"must be {NAMES[kind]}; unknown: {', '.join(map(repr, unknown))}" if unknown else None


def _set(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    head, *rest = path
    return replace(obj, **{head: _set(getattr(obj, head), tuple(rest), value) if rest else value})


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


_POLICY_TASKS = "click-button,enter-text,login-user,click-link"

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke", model="tiny",
        sampling=SamplingConfig(miniwob_tasks=_POLICY_TASKS, max_steps=4),
        evaluation=EvaluationConfig(test_tasks=4),
        training=TrainingConfig(max_steps=4, max_length=384),
        world_model=WorldModelConfig(max_tokens=48, synth_max_actions=2, synth_filter="replay"),
        lookahead=LookaheadConfig(scorer="world_model")),
    # No explorations (`demo_explore`): they cost round 0's world model fidelity and did not
    # teach it to predict failed ends (RESULTS.md R14).
    # Sized from the training recipe (RESULTS.md R1): ~240 demonstration steps and 112 LoRA steps
    # make SmolLM2 solve enter-text and login-user and sometimes click-button / click-link, which
    # leaves round 1 something to learn; 10 test seeds per task; two never-trained tasks.
    "cpu": Preset(
        name="cpu", model="smollm2", backend="auto",
        sampling=SamplingConfig(miniwob_tasks=_POLICY_TASKS, demo_tasks=140, train_tasks=20, samples=2, max_steps=5),
        evaluation=EvaluationConfig(test_tasks=40, generalization_tasks="click-dialog,focus-text",
                                    generalization_test_tasks=20),
        judge=JudgeConfig(max_tokens=64),
        training=TrainingConfig(max_steps=112),
        world_model=WorldModelConfig(training=TrainingConfig(max_steps=48, max_length=768), max_tokens=256,
                                     rationale_max_tokens=0, transitions=96, synth_queries=None, synth_samples=8,
                                     synth_max_actions=4, synth_filter="replay", fidelity_transitions=50),
        lookahead=LookaheadConfig(depths=(1,), tasks=4, scorer="world_model", margin=0.1),
        limits=CallLimits(request_timeout_s=300, step_deadline_s=600, episode_deadline_s=3600)),
    # A model FOLDER (no hub at run time): infra/k8s/ mounts the weights at /models.
    "gpu": Preset(
        name="gpu", model="/models/Qwen2.5-7B-Instruct", backend="vllm", tensor_parallel_size=1,
        sampling=SamplingConfig(suite="sandbox", demo_tasks=200, train_tasks=500, samples=4, max_steps=12,
                                concurrency=8, shards=8, policy_max_tokens=512),
        evaluation=EvaluationConfig(test_tasks=135),
        judge=JudgeConfig(filter="judge", max_tokens=1000),
        training=TrainingConfig(max_steps=600, max_length=4096),
        world_model=WorldModelConfig(training=TrainingConfig(max_steps=300, max_length=8192), max_tokens=2048,
                                     synth_queries=None, fidelity_transitions=200),
        lookahead=LookaheadConfig(tasks=None)),
}


# The names a flow parameter takes (a drop-down in the Prefect UI), from PRESETS itself.
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
PresetChoice = Union[PresetName, Preset]  # what the flows take: a name, or a whole preset


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def resolve_preset(preset: str | Preset, overrides: Mapping[str, Any] | None = None) -> Preset:
    """A run's preset: the named one (or `preset` itself), with `overrides` applied."""
    chosen = get_preset(preset) if isinstance(preset, str) else preset
    return chosen.override(overrides or {})
