"""Scripted MiniWoB solvers: they read only the observation and the utterance, as a model must.

They produce the demonstrations of round 0 (imitation learning), so every step has a short
thought a model can learn from. `SOLVERS` maps a MiniWoB task name to its script; the keys
are the suite's named easy subset.
"""

from __future__ import annotations

import re
from typing import Callable

from evolver_core.contracts.reply import Reply
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.task import Task
from evolver_core.suites.solver import GaveUp, GeneratorSolver, SolverScript, need


def quoted(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', text)


def click(obs: Observation, role: str | None, name: str, why: str) -> Reply:
    el = need(next((e for e in obs.find(role, name) if e.id != 1), None), f"{role or 'element'} '{name}'")
    return Reply(thought=why, action=f"click [{el.id}]")


def type_into(el_id: int, text: str, why: str) -> Reply:
    return Reply(thought=why, action=f"type [{el_id}] [{text}] [press_enter_after=0]")


def textboxes(obs: Observation) -> list:
    return [e for e in obs.elements if e.role in ("textbox", "searchbox")]


def click_test(task: Task) -> SolverScript:
    obs = yield None
    button = need(obs.first("button"), "button")
    yield Reply(f"The task asks me to click the button, which is [{button.id}].", f"click [{button.id}]")


def click_named_button(task: Task) -> SolverScript:
    obs = yield None
    names = quoted(task.query) or re.findall(r"button (\w+)", task.query)
    name = need(names[0] if names else None, "button name in the task").strip()
    yield click(obs, "button", name, f"I need to click the button labelled '{name}'.")


def click_button_sequence(task: Task) -> SolverScript:
    obs = yield None
    for name in re.findall(r"button (\w+)", task.query):
        obs = yield click(obs, "button", name, f"The task lists buttons in order; next I click '{name}'.")


def click_link(task: Task) -> SolverScript:
    obs = yield None
    name = quoted(task.query)[0]
    yield click(obs, None, name, f"The link to click reads '{name}'.")


def click_dialog(task: Task) -> SolverScript:
    obs = yield None
    close = need(obs.first("button", "Close") or obs.first("button", "x"), "close button")
    yield Reply(f"To close the dialog I click its close button [{close.id}].", f"click [{close.id}]")


def _case(text: str, query: str) -> str:
    if "lower case" in query:
        return text.lower()
    if "upper case" in query:
        return text.upper()
    return text


def enter_text(task: Task) -> SolverScript:
    obs = yield None
    text = _case(quoted(task.query)[0], task.query)
    box = need(next(iter(textboxes(obs)), None), "text field")
    obs = yield type_into(box.id, text, f"I type '{text}' into the text field [{box.id}].")
    yield click(obs, "button", "Submit", "The text is entered; now I press Submit.")


def enter_password(task: Task) -> SolverScript:
    obs = yield None
    password = quoted(task.query)[0]
    for i in range(2):
        box = textboxes(obs)[i] if len(textboxes(obs)) > i else None
        box = need(box, f"password field {i + 1}")
        obs = yield type_into(box.id, password, f"I enter the password into field {i + 1}, [{box.id}].")
    yield click(obs, "button", "Submit", "Both password fields are filled; I press Submit.")


def login_user(task: Task) -> SolverScript:
    obs = yield None
    username, password = quoted(task.query)[:2]
    box = need(next(iter(textboxes(obs)), None), "username field")
    obs = yield type_into(box.id, username, f"I type the username '{username}' into the first field [{box.id}].")
    boxes = textboxes(obs)
    box = need(boxes[1] if len(boxes) > 1 else None, "password field")
    obs = yield type_into(box.id, password, f"Next the password goes into the second field [{box.id}].")
    yield click(obs, "button", "Login", "Username and password are in; I press Login.")


_ORDINALS = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4}


def focus_text(task: Task) -> SolverScript:
    obs = yield None
    m = re.search(r"(\d(?:st|nd|rd|th))", task.query)
    boxes = textboxes(obs)
    index = _ORDINALS.get(m.group(1), 0) if m else 0
    box = need(boxes[index] if len(boxes) > index else None, "textbox")
    yield Reply(f"To focus the textbox I click on it, [{box.id}].", f"click [{box.id}]")


def click_checkboxes(task: Task) -> SolverScript:
    obs = yield None
    m = need(re.search(r"Select (.*) and click Submit", task.query), "items to select")
    wanted = [] if m.group(1).strip() == "nothing" else [w.strip() for w in m.group(1).split(",") if w.strip()]
    for name in wanted:
        obs = yield click(obs, "checkbox", name, f"'{name}' is one of the items to select; I tick it.")
    yield click(obs, "button", "Submit", "All requested boxes are ticked; I press Submit.")


def click_option(task: Task) -> SolverScript:
    obs = yield None
    m = need(re.search(r"Select (.*) and click Submit", task.query), "option to select")
    name = m.group(1).strip()
    obs = yield click(obs, "radio", name, f"I choose the option '{name}'.")
    yield click(obs, "button", "Submit", "The option is chosen; I press Submit.")


def choose_list(task: Task) -> SolverScript:
    obs = yield None
    m = need(re.search(r"Select (.*) from the list", task.query), "item to choose")
    name = m.group(1).strip()
    obs = yield click(obs, "option", name, f"I pick '{name}' in the list.")
    yield click(obs, "button", "Submit", "The item is selected; I press Submit.")


def click_tab(task: Task) -> SolverScript:
    obs = yield None
    m = need(re.search(r"(Tab #\d+)", task.query), "tab name")
    yield click(obs, "link", m.group(1), f"The task names {m.group(1)}; I click it.")


def click_collapsible(task: Task) -> SolverScript:
    obs = yield None
    section = need(next((e for e in obs.elements if e.role == "tab" and e.name.startswith("Section")), None),
                   "collapsed section")
    obs = yield Reply(f"The section header [{section.id}] expands the section.", f"click [{section.id}]")
    yield click(obs, "button", "Submit", "The section is open; I press Submit.")


SOLVERS: dict[str, Callable[[Task], GeneratorSolver]] = {
    name: (lambda script: (lambda task: GeneratorSolver(script, task)))(script)
    for name, script in {
        "click-test": click_test,
        "click-test-2": click_named_button,
        "click-button": click_named_button,
        "click-button-sequence": click_button_sequence,
        "click-link": click_link,
        "click-dialog": click_dialog,
        "enter-text": enter_text,
        "enter-text-2": enter_text,
        "enter-password": enter_password,
        "login-user": login_user,
        "focus-text": focus_text,
        "focus-text-2": focus_text,
        "click-checkboxes": click_checkboxes,
        "click-option": click_option,
        "choose-list": choose_list,
        "click-tab": click_tab,
        "click-collapsible": click_collapsible,
    }.items()
}

__all__ = ["SOLVERS", "GaveUp"]
