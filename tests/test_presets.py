"""Presets and their fields as `evolve --set key=value`, `overrides={...}` and the flows'
`preset` parameter give them: typed, checked against each field's allowed values before
anything runs, and documented field by field."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from cli.main import app
from evolver_core import config
from evolver_core.agents.lookahead import LookaheadSpec
from evolver_core.config import (JudgeConfig, LookaheadConfig, ModelSpec, SamplingConfig, TrainingConfig,
                                 WorldModelConfig)
from evolver_core.presets import PRESETS, Preset, field_paths, get_preset, parse_setting, resolve_preset
from flows.evolve_round import evolve_round, run_preset


def override(*settings: str):
    return get_preset("cpu").override(dict(parse_setting(s) for s in settings))


def test_set_values_are_typed_by_the_field_named_by_path_or_unique_name():
    p = override("demo_tasks=60", "sampling.temperature=0.5", "self_improve=false", "lookahead.depths=1,2,3",
                 "miniwob_tasks=click-button,enter-text", "generalization_tasks=click-link",
                 "world_model.training.max_steps=7")
    assert (p.sampling.demo_tasks, p.sampling.temperature, p.self_improve) == (60, 0.5, False)
    assert p.lookahead.depths == (1, 2, 3) and override("depths=2").lookahead.depths == (2,)
    assert p.sampling.miniwob_tasks == "click-button,enter-text"
    assert p.evaluation.generalization_tasks == "click-link"
    assert p.world_model.training.max_steps == 7 and p.training.max_steps == get_preset("cpu").training.max_steps


def test_none_sets_a_field_to_none():
    assert get_preset("smoke").world_model.synth_queries == 2
    assert override("synth_queries=none").world_model.synth_queries is None
    assert get_preset("cpu").override({"synth_queries": None}).world_model.synth_queries is None


def test_unknown_ambiguous_fields_and_bad_values_are_refused_with_the_choices_listed():
    with pytest.raises(ValueError, match="unknown preset field 'nope'; the fields are: model, backend"):
        override("nope=1")
    with pytest.raises(ValueError, match="several sections; name one of: sampling.max_steps, training.max_steps"):
        override("max_steps=3")
    with pytest.raises(ValueError, match="preset field 'sampling.demo_tasks'"):
        override("demo_tasks=many")
    with pytest.raises(ValueError, match="'sampling.round0' must be one of demos, self, got 'sometimes'"):
        override("round0=sometimes")
    with pytest.raises(ValueError, match="'judge.filter' must be one of gold, judge"):
        override("filter=vibes")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_setting("demo_tasks")


@pytest.mark.parametrize("setting, message", [
    ("training.max_steps=-1", "'training.max_steps' must be >= 1, got -1"),
    ("sampling.concurrency=0", "'sampling.concurrency' must be >= 1, got 0"),
    ("demo_tasks=-3", "'sampling.demo_tasks' must be >= 1, got -3"),
    ("sampling.temperature=nan", "'sampling.temperature' must be 0 to 2, got nan"),
    ("lookahead.temperature=inf", "'lookahead.temperature' must be 0 to 2, got inf"),
    ("limits.step_deadline_s=-1", "'limits.step_deadline_s' must be > 0, got -1"),
    ("sampling.suite=nosuchsuite", "'sampling.suite' must be one of miniwob, sandbox, .*got 'nosuchsuite'"),
    ("sampling.miniwob_tasks=click-button,nosuch-task", "'sampling.miniwob_tasks' must be easy, all, or a comma list "
     "of MiniWoB task names; unknown: 'nosuch-task'"),
    ("lookahead.depths=1,4", "'lookahead.depths' must be 1 to 3, got 4"),
])
def test_values_no_run_can_use_are_refused_naming_the_field_and_its_range(setting, message):
    with pytest.raises(ValueError, match=message):
        override(setting)


def test_allowed_values_hold_however_a_section_is_built():
    with pytest.raises(ValueError, match="SamplingConfig.concurrency must be >= 1, got 0"):
        SamplingConfig(concurrency=0)
    with pytest.raises(ValueError, match="TrainingConfig.learning_rate must be > 0"):
        TrainingConfig(learning_rate=math.nan)
    assert override("training.max_steps=none").training.max_steps is None  # the epochs decide
    assert override("sampling.miniwob_tasks=all", "generalization_tasks=click-dialog").sampling.miniwob_tasks == "all"


def test_every_config_field_has_help_and_every_preset_value_is_allowed():
    records = [c for c in vars(config).values()
               if dataclasses.is_dataclass(c) and isinstance(c, type) and c is not config.Allowed] + [Preset]
    for record in records:
        for f in dataclasses.fields(record):
            assert f.metadata.get("help"), f"{record.__name__}.{f.name} has no help"
    assert {p.name for p in PRESETS.values()} == set(PRESETS)
    assert all(f.help for f in field_paths().values())


def test_a_run_preset_is_a_name_or_a_whole_preset_then_the_overrides():
    p = run_preset("cpu", {"max_retries": 5, "lookahead.depths": [2]})
    assert p.lookahead.depths == (2,) and p.limits.max_retries == 5
    assert p.judge == get_preset("cpu").judge and p.backend != "auto"
    mine = replace(get_preset("smoke"), name="mine", sampling=SamplingConfig(max_steps=3))
    assert resolve_preset(mine) is mine and resolve_preset(mine, {"demo_tasks": 2}).sampling == \
        SamplingConfig(max_steps=3, demo_tasks=2)
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose one of smoke, cpu, gpu"):
        resolve_preset("nope")


def test_the_preset_parameter_validates_as_the_prefect_form_sends_it():
    """Prefect validates a flow run's parameters against the signature: the preset arrives
    from the UI or a deployment as a name or as JSON, must become the typed preset, and a
    value no run can use must be refused before the run starts."""
    schema = evolve_round.parameters.model_dump()
    assert {"preset", "overrides"} <= set(schema["properties"]) and "sampling" not in schema["properties"]
    assert "max_steps" in str(schema["definitions"]["SamplingConfig"]["properties"])
    assert evolve_round.validate_parameters({"preset": "cpu"})["preset"] == "cpu"
    sent = {"name": "mine", "model": "tiny", "sampling": {"max_steps": 3, "suite": "miniwob"}}
    params = evolve_round.validate_parameters({"preset": sent})
    assert params["preset"] == Preset(name="mine", model="tiny", sampling=SamplingConfig(max_steps=3))
    with pytest.raises(Exception, match="max_steps"):
        evolve_round.validate_parameters({"preset": {**sent, "sampling": {"max_steps": "many"}}})
    with pytest.raises(Exception, match="concurrency must be >= 1"):
        evolve_round.validate_parameters({"preset": {**sent, "sampling": {"concurrency": 0}}})
    with pytest.raises(Exception, match="smoke"):
        evolve_round.validate_parameters({"preset": "nosuch"})


def test_look_ahead_holds_its_sections_whole_and_names_what_its_episodes_depend_on():
    spec = LookaheadSpec(ModelSpec(model="tiny"), ModelSpec(), 2)
    assert (spec.lookahead, spec.wm, spec.judge) == (LookaheadConfig(), WorldModelConfig(), JudgeConfig())
    p = get_preset("cpu")
    params = LookaheadSpec(ModelSpec(), ModelSpec(), 1, p.lookahead, p.world_model, p.judge).identity_params()
    assert params["wm"]["max_tokens"] == 256 and params["lookahead"]["margin"] == 0.1
    # which evaluations run (depths, their tasks) is the flow's choice, named by each stage's own parameters
    assert not {"depths", "tasks", "headroom_tasks"} & set(params["lookahead"])


def test_cli_refuses_a_bad_preset_or_set_before_starting_anything(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["evolve", "--preset", "nope", "--storage", str(tmp_path)])
    assert out.exit_code == 2 and "--preset" in out.output and "unknown preset 'nope'" in out.output
    out = runner.invoke(app, ["evolve", "--set", "sampling.concurrency=0", "--storage", str(tmp_path)])
    assert out.exit_code == 2 and "--set" in out.output and "'sampling.concurrency' must be >= 1" in out.output
    out = runner.invoke(app, ["sample", "--concurrency", "0", "--storage", str(tmp_path)])
    assert out.exit_code == 2 and "concurrency must be >= 1" in out.output
    assert not list(tmp_path.iterdir())


def test_presets_lists_every_field_with_its_range_and_help():
    out = CliRunner().invoke(app, ["presets", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["field"]: r for r in __import__("json").loads(out.output.strip().splitlines()[-1])["fields"]}
    assert rows.keys() == field_paths().keys()
    assert rows["sampling.concurrency"]["allowed"] == ">= 1" and rows["training.max_steps"]["cpu"] == 112
    assert rows["lookahead.rollout_temperature"]["help"]


def test_the_trainer_script_shows_help_and_refuses_values_no_run_can_use(capsys):
    from evolver_core.training.finetune import argument_parser, main

    text = argument_parser().format_help()
    assert "LoRA rank. Allowed: >= 1." in " ".join(text.split())
    with pytest.raises(SystemExit) as exit_:
        main(["--examples", "x", "--base", "y", "--out", "z", "--max-steps", "-1"])
    assert exit_.value.code == 2 and "TrainingConfig.max_steps must be >= 1, got -1" in capsys.readouterr().err
