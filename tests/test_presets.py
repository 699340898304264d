"""Preset overrides as `evolve --set key=value` and `overrides={...}` give them."""

from __future__ import annotations

import pytest

from evolver_core.presets import get_preset, parse_setting


def override(*settings: str):
    return get_preset("cpu").override(dict(parse_setting(s) for s in settings))


def test_set_values_are_typed_by_the_field():
    p = override("demo_tasks=60", "temperature=0.5", "self_improve=false", "lookahead_depths=1,2,3",
                 "miniwob_tasks=click-button,enter-text", "generalization_tasks=click-link")
    assert (p.demo_tasks, p.temperature, p.self_improve) == (60, 0.5, False)
    assert p.lookahead_depths == (1, 2, 3) and override("lookahead_depths=2").lookahead_depths == (2,)
    assert p.miniwob_tasks == "click-button,enter-text" and p.generalization_tasks == "click-link"


def test_none_sets_a_field_to_none_which_with_cannot():
    assert get_preset("cpu").synth_queries == 4
    assert override("synth_queries=none").synth_queries is None
    assert get_preset("cpu").override({"synth_queries": None}).synth_queries is None
    assert get_preset("cpu").with_(synth_queries=None).synth_queries == 4


def test_unknown_fields_and_bad_values_are_refused_with_the_fields_listed():
    with pytest.raises(ValueError, match="unknown preset field 'nope'; the fields are: model, backend"):
        override("nope=1")
    with pytest.raises(ValueError, match="preset field 'demo_tasks'"):
        override("demo_tasks=many")
    with pytest.raises(ValueError, match="round0 must be"):
        override("round0=sometimes")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_setting("demo_tasks")
