"""Preset sections and overrides as `evolve --set key=value`, `overrides={...}` and the flows'
section parameters give them."""

from __future__ import annotations

import pytest

from evolver_core.config import LookaheadConfig, SamplingConfig
from evolver_core.presets import get_preset, parse_setting
from flows.evolve_round import evolve_round, round_preset


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
    assert get_preset("cpu").world_model.synth_queries == 4
    assert override("synth_queries=none").world_model.synth_queries is None
    assert get_preset("cpu").override({"synth_queries": None}).world_model.synth_queries is None


def test_unknown_ambiguous_fields_and_bad_values_are_refused_with_the_choices_listed():
    with pytest.raises(ValueError, match="unknown preset field 'nope'; the fields are: model, backend"):
        override("nope=1")
    with pytest.raises(ValueError, match="several sections; name one of: sampling.max_steps, training.max_steps"):
        override("max_steps=3")
    with pytest.raises(ValueError, match="preset field 'sampling.demo_tasks'"):
        override("demo_tasks=many")
    with pytest.raises(ValueError, match="round0 must be"):
        override("round0=sometimes")
    with pytest.raises(ValueError, match="judge filter must be"):
        override("filter=vibes")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_setting("demo_tasks")


def test_a_flow_section_parameter_replaces_the_whole_section_then_overrides_apply():
    p = round_preset("cpu", {"max_retries": 5}, sampling=SamplingConfig(max_steps=3),
                     lookahead=LookaheadConfig(depths=(2,)))
    assert p.sampling == SamplingConfig(max_steps=3)  # the section's defaults, not the cpu preset's
    assert p.lookahead.depths == (2,) and p.limits.max_retries == 5
    assert p.judge == get_preset("cpu").judge and p.backend != "auto"


def test_sections_validate_as_the_prefect_form_sends_them():
    """Prefect validates a flow run's parameters against the signature: a section arrives
    as JSON from the UI and must become the typed section, a wrong field must be refused."""
    schema = evolve_round.parameters.model_dump()
    assert {"sampling", "evaluation", "judge", "training", "world_model", "lookahead", "limits"} <= set(
        schema["properties"])
    assert "max_steps" in str(schema["definitions"]["SamplingConfig"]["properties"])
    params = evolve_round.validate_parameters({"sampling": {"max_steps": 3, "suite": "miniwob"}})
    assert params["sampling"] == SamplingConfig(max_steps=3)
    with pytest.raises(Exception, match="max_steps"):
        evolve_round.validate_parameters({"sampling": {"max_steps": "many"}})
