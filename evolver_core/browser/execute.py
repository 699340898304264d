"""Carry out one action on the exact DOM node behind an observation id.

The id maps to a backend DOM node id (CDP), so the executor never searches by role and name
(the reference did, and clicked the wrong one of several "Search" buttons). Failures come back
as `ActionError` with a message the agent reads as its next error observation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from evolver_core.contracts.actions import Action, format_action
from evolver_core.contracts.text import cap_text

# How much of an action an error message repeats: a 10,000-character `type` that failed must
# not come back whole in the next prompt.
ACTION_ECHO_CHARS = 120

# Runs on the target node (`this`): finds the element to act on and prepares it.
_PREPARE_JS = """
function(mode) {
  let el = this.nodeType === Node.TEXT_NODE ? this.parentElement : this;
  if (!el) return {kind: 'missing'};
  if (mode === 'type' && !(el.matches('input, textarea, select, [contenteditable=""], [contenteditable=true]'))) {
    el = el.querySelector('input:not([type=hidden]), textarea, select, [contenteditable=""], [contenteditable=true]');
    if (!el) return {kind: 'not-editable'};
  }
  const anchor = el.closest('a[target]');
  if (anchor) anchor.removeAttribute('target');  // keep navigation in this tab
  el.scrollIntoView({block: 'center', inline: 'center'});
  const path = (function(n) {
    const parts = [];
    for (; n && n.nodeType === Node.ELEMENT_NODE; n = n.parentElement) {
      let part = n.localName;
      const parent = n.parentElement;
      if (parent) {
        const same = Array.from(parent.children).filter(c => c.localName === n.localName);
        if (same.length > 1) part += ':nth-of-type(' + (same.indexOf(n) + 1) + ')';
      }
      parts.unshift(part);
    }
    return parts.join(' > ');
  })(el);
  const text = (el.value !== undefined && el.value !== '' ? String(el.value) : (el.innerText || el.textContent || ''))
    .trim().slice(0, 200);
  const select = el.localName === 'option' ? el.closest('select') : null;
  return {kind: select ? 'option' : (el.localName === 'select' ? 'select' : 'element'), path, text};
}
"""

_SELECT_OPTION_JS = """
function(label) {
  let select = this.nodeType === Node.TEXT_NODE ? this.parentElement : this;
  let option = null;
  if (select.localName === 'option') { option = select; select = select.closest('select'); }
  else if (select.localName !== 'select') select = select.querySelector('select');
  if (!select) return null;
  if (!option) {
    const want = String(label).trim().toLowerCase();
    option = Array.from(select.options).find(o => o.text.trim().toLowerCase() === want
                                                  || o.value.toLowerCase() === want)
          || Array.from(select.options).find(o => o.text.trim().toLowerCase().includes(want));
  }
  if (!option) return null;
  select.value = option.value;
  option.selected = true;
  select.dispatchEvent(new Event('input', {bubbles: true}));
  select.dispatchEvent(new Event('change', {bubbles: true}));
  return option.text.trim();
}
"""

_SELECT_TEXT_JS = """
function() {
  const el = document.activeElement;
  if (el && typeof el.select === 'function') el.select();
  else if (el && el.isContentEditable) document.execCommand('selectAll');
}
"""


# Which of `selectors` name this node (a selector naming a <span> also names its parent, as
# WebCanvas counts it): Mind2Web-Live's element key nodes are scored from these hits.
MATCHING_SELECTORS_JS = """
function(selectors) {
  const el = this.nodeType === Node.TEXT_NODE ? this.parentElement : this;
  return selectors.filter(selector => {
    let ref = null;
    try { ref = document.querySelector(selector); } catch (e) { return false; }
    return ref !== null && (ref === el || (ref.localName === 'span' && ref.parentElement === el));
  });
}
"""


class ActionError(Exception):
    """An action that could not be carried out; the message is shown to the agent."""


async def _resolve(cdp: Any, backend_node_id: int, element_id: int) -> str:
    try:
        res = await cdp.send("DOM.resolveNode", {"backendNodeId": backend_node_id})
    except Exception as exc:
        raise ActionError(f"element [{element_id}] is no longer on the page") from exc
    return res["object"]["objectId"]


async def _call(cdp: Any, object_id: str, fn: str, *args: Any) -> Any:
    res = await cdp.send("Runtime.callFunctionOn", {
        "objectId": object_id, "functionDeclaration": fn,
        "arguments": [{"value": a} for a in args], "returnByValue": True, "awaitPromise": True,
    })
    if "exceptionDetails" in res:
        raise ActionError(f"script error: {res['exceptionDetails'].get('text', 'unknown')}")
    return res.get("result", {}).get("value")


async def _center(cdp: Any, backend_node_id: int, element_id: int) -> tuple[float, float]:
    try:
        quads = (await cdp.send("DOM.getContentQuads", {"backendNodeId": backend_node_id}))["quads"]
    except Exception as exc:
        raise ActionError(f"element [{element_id}] has no position on the page") from exc
    if not quads:
        raise ActionError(f"element [{element_id}] is not visible")
    q = quads[0]
    return (q[0] + q[2] + q[4] + q[6]) / 4, (q[1] + q[3] + q[5] + q[7]) / 4


async def act_on_element(page: Any, cdp: Any, action: Action, backend_node_id: int,
                         watch_selectors: list[str] | None = None) -> dict:
    """click / type on one node; returns {"path", "value", "kind", "matched"} for the action record.

    `watch_selectors` are checked against the node before acting (the action may navigate away).
    """
    eid = action.element_id or 0
    object_id = await _resolve(cdp, backend_node_id, eid)
    matched = await _call(cdp, object_id, MATCHING_SELECTORS_JS, watch_selectors) if watch_selectors else []
    info = await _call(cdp, object_id, _PREPARE_JS, action.name)
    info["matched"] = matched
    kind = info.get("kind")
    if kind == "missing":
        raise ActionError(f"element [{eid}] is no longer on the page")
    if kind == "not-editable":
        raise ActionError(f"element [{eid}] is not a text field; type needs a textbox")
    if kind == "option" or (kind == "select" and action.name == "type"):
        chosen = await _call(cdp, object_id, _SELECT_OPTION_JS, action.text or "")
        if chosen is None:
            raise ActionError(f"no option {cap_text(action.text or '', ACTION_ECHO_CHARS)!r} in the menu [{eid}]")
        return {**info, "kind": "select", "value": chosen}
    if action.name == "click":
        x, y = await _center(cdp, backend_node_id, eid)
        await page.mouse.click(x, y)
        return {**info, "kind": "click", "value": info.get("text", "")}
    # type: focus the exact field, replace its content, then type like a user.
    try:
        await cdp.send("DOM.focus", {"backendNodeId": backend_node_id})
    except Exception:
        await _call(cdp, object_id,
                    "function(){ (this.querySelector && this.querySelector('input,textarea') || this).focus(); }")
    await page.evaluate(f"({_SELECT_TEXT_JS})()")
    await page.keyboard.press("Backspace")
    await page.keyboard.type(action.text or "")
    if action.press_enter_after:
        await page.keyboard.press("Enter")
    return {**info, "kind": "type", "value": action.text or ""}


async def scroll(page: Any, direction: str) -> None:
    sign = -1 if direction == "up" else 1
    await page.evaluate(f"window.scrollBy(0, {sign} * window.innerHeight)")


def describe(action: Action) -> str:
    """The action as an error message names it (its text capped)."""
    return cap_text(format_action(action), ACTION_ECHO_CHARS)


async def with_timeout(coro: Any, seconds: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError as exc:
        raise ActionError(f"{what} timed out after {seconds:g} s") from exc
