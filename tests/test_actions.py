from hypothesis import given
from hypothesis import strategies as st

import re

import pytest

from evolver_core.contracts.actions import (
    ACTION_REGEX, Action, ActionParseError, action_from_json, action_to_json, action_regex, format_action,
    parse_action, reply_regex,
)

text = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=40).filter(
    lambda s: not re.search(r"\]\s*\[\s*press_enter_after\s*=", s))
ids = st.integers(min_value=1, max_value=10_000)
actions = st.one_of(
    ids.map(lambda i: Action("click", element_id=i)),
    st.builds(lambda i, t, e: Action("type", element_id=i, text=t, press_enter_after=e), ids, text, st.booleans()),
    st.sampled_from(["up", "down"]).map(lambda d: Action("scroll", direction=d)),
    st.sampled_from(["goback", "restart", "wait"]).map(Action),
    st.one_of(st.none(), text).map(lambda t: Action("stop", text=t)),
)


@given(actions)
def test_format_then_parse_is_identity(action):
    assert parse_action(format_action(action)) == action


@given(actions)
def test_json_form_round_trips(action):
    assert action_from_json(action_to_json(action)) == action


@given(actions)
def test_formatted_actions_match_the_constrained_decoding_regex(action):
    assert re.fullmatch(ACTION_REGEX, format_action(action))


def test_a_grammar_can_limit_clicks_to_some_elements():
    """Look-ahead's sampled candidates click none of the earlier candidates' elements."""
    some = action_regex([2, 12, 3])
    assert [bool(re.fullmatch(some, f"click [{i}]")) for i in (2, 3, 12, 1, 4, 21, 123)] == [True] * 3 + [False] * 4
    assert re.fullmatch(some, "type [1] [x] [press_enter_after=0]") and re.fullmatch(some, "stop [done]")
    assert not re.fullmatch(action_regex([]), "click [1]") and re.fullmatch(action_regex([]), "wait")
    assert re.fullmatch(reply_regex([5]), "Thought: the fifth.\nAction: click [5]")
    assert not re.fullmatch(reply_regex([5]), "Thought: the fourth.\nAction: click [4]")


@pytest.mark.parametrize("raw, expected", [
    ("click [12]", Action("click", element_id=12)),
    ("  click[3] ", Action("click", element_id=3)),
    ("```type [5] [hello world] [press_enter_after=0]```",
     Action("type", element_id=5, text="hello world", press_enter_after=False)),
    ("type [5] [hello]", Action("type", element_id=5, text="hello", press_enter_after=True)),
    ("type [5] [a [b] c] [press_enter_after=1]", Action("type", element_id=5, text="a [b] c")),
    ("scroll [direction=down]", Action("scroll", direction="down")),
    ("scroll [up]", Action("scroll", direction="up")),
    ("stop [$19.99]", Action("stop", text="$19.99")),
    ("stop", Action("stop")),
    ("goback", Action("goback")),
])
def test_parses_common_forms(raw, expected):
    assert parse_action(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ("", "empty"),
    ("jump [3]", "unknown action 'jump'"),
    ("click [x]", "malformed click"),
    ("click [0]", "positive element id"),
    ("scroll [left]", "malformed scroll"),
    ("type [3]", "malformed type"),
    ("click [1]\nclick [2]", "one line"),
])
def test_bad_actions_say_what_is_wrong(raw, message):
    with pytest.raises(ActionParseError, match=re.escape(message)):
        parse_action(raw)


def test_the_policy_prompt_lists_the_grammar_it_is_parsed_with():
    from evolver_core.contracts.prompt import system_prompt
    from evolver_core.contracts.actions import ACTION_NAMES, ACTION_SIGNATURES, describe_actions

    assert set(ACTION_SIGNATURES) == set(ACTION_NAMES)
    assert all(ACTION_SIGNATURES[n].split()[0] == n for n in ACTION_NAMES)
    assert f"Actions: {describe_actions()}\n" in system_prompt()
