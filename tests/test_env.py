"""The browser environment on real pages in Debian chromium."""

import asyncio

import pytest

from evolver_core.browser.allowlist import request_allowed, url_allowed
from evolver_core.browser.env import EnvConfig, launch_browser


def el(obs, role, name):
    found = obs.first(role, name)
    assert found is not None, f"{role} {name!r} missing from\n{obs.text}"
    return found.id


async def test_observation_format_and_viewport_filter(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite)
        obs = await env.reset(pages_suite.task())
        lines = obs.text.splitlines()
        assert lines[0] == "Tab 1 (current): Form page" and lines[1] == ""
        assert lines[2].startswith("[1] RootWebArea 'Form page'")
        assert [e.id for e in obs.elements] == list(range(1, len(obs.elements) + 1))
        assert "\t[" in obs.tree  # children are indented by depth
        assert obs.first("textbox", "Query") is not None
        assert any(e.role == "textbox" and e.name == "" for e in obs.elements), "unnamed textbox dropped"
        assert [e.name for e in obs.find("option")] == ["Red", "Green", "Blue"]
        assert obs.first(name="Far below") is None, "element below the viewport shown"
        obs = await env.step("scroll [down]")
        assert obs.first(name="Far below") is not None
        await env.close()


async def test_element_cap(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite, EnvConfig(max_elements=5))
        obs = await env.reset(pages_suite.task())
        assert len(obs.elements) == 5 and obs.truncated


async def test_click_hits_the_exact_node_among_same_named_buttons(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite)
        obs = await env.reset(pages_suite.task())
        second = obs.find("button", "Same")[1].id
        obs = await env.step(f"click [{second}]")
        assert obs.error is None
        assert obs.first("StaticText", "clicked two") is not None


async def test_type_honours_press_enter_after(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite)
        obs = await env.reset(pages_suite.task())
        box = el(obs, "textbox", "Query")
        obs = await env.step(f"type [{box}] [first] [press_enter_after=0]")
        assert obs.url.endswith("form.html")
        assert obs.first("textbox", "Query").props.get("value") == "first"
        box = el(obs, "textbox", "Query")
        obs = await env.step(f"type [{box}] [cats] [press_enter_after=1]")  # replaces, then submits
        assert "result.html?q=cats" in obs.url
        assert obs.first("StaticText", "You searched: cats") is not None
        assert env.events[-1].action == "type" and env.events[-1].element_value == "cats"


async def test_select_option_and_waiting_for_late_dom_changes(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite)
        obs = await env.reset(pages_suite.task())
        obs = await env.step(f"click [{el(obs, 'option', 'Blue')}]")
        assert obs.first("combobox").props.get("value") == "Blue"
        obs = await env.step(f"click [{el(obs, 'button', 'Late')}]")
        assert obs.first("StaticText", "late") is not None, "settled before the DOM changed"


async def test_navigation_back_and_new_tab_links_stay_in_tab(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite)
        obs = await env.reset(pages_suite.task())
        obs = await env.step(f"click [{el(obs, 'link', 'Second in new tab')}]")
        assert obs.url.endswith("page2.html") and len(obs.tabs) == 1
        obs = await env.step("goback")
        assert obs.url.endswith("form.html")
        obs = await env.step("goback")
        assert "no previous page" in obs.error


async def test_failures_become_error_observations(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite, EnvConfig(action_timeout_s=1.0))
        obs = await env.reset(pages_suite.task())
        assert "no element [999]" in (await env.step("click [999]")).error
        assert "Invalid action" in (await env.step("fly [3]")).error
        obs = await env.step("restart")
        heading = el(obs, "heading", "Test form")
        assert "not a text field" in (await env.step(f"type [{heading}] [x]")).error
        obs = await env.step(f"click [{el(obs, 'button', 'Busy')}]")
        assert "timed out" in obs.error


@pytest.mark.parametrize("name", ["Elsewhere", "Local file"])
async def test_navigation_outside_the_allowlist_is_refused(pages_suite, name):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite)
        obs = await env.reset(pages_suite.task())
        obs = await env.step(f"click [{el(obs, 'link', name)}]")
        assert obs.url.endswith("form.html")
        assert "refused" in obs.error


def test_host_allowlist_rules():
    assert url_allowed("https://www.github.com/x", ("*.github.com",))
    assert not url_allowed("https://github.com/x", ("*.github.com",))  # listed on its own
    assert not url_allowed("https://evilgithub.com/", ("*.github.com",))
    assert url_allowed("http://127.0.0.1:8000/a", ("127.0.0.1:8000",))
    assert not url_allowed("http://127.0.0.1:9000/a", ("127.0.0.1:8000",))
    assert not url_allowed("file:///etc/passwd", ("*",))
    assert not url_allowed("chrome://settings", ("settings",))
    assert url_allowed("http://127.0.0.1/a", ("127.0.0.1:80",))  # the default port, made explicit
    assert request_allowed("data:image/png;base64,AAAA", ("127.0.0.1:80",), document=False)
    assert not request_allowed("data:text/html,<p>x</p>", ("*",), document=True)  # inline, never a page
    assert not request_allowed("javascript:alert(1)", ("*",), document=False)


async def test_crashed_page_is_rebuilt_and_reported(pages_suite):
    async with launch_browser() as browser:
        env = await browser.new_env(pages_suite)
        obs = await env.reset(pages_suite.task())
        link = el(obs, "link", "Second page")
        obs = await env.step(f"click [{link}]")
        old_context = env.context
        crash = asyncio.ensure_future(env.cdp.send("Page.crash"))  # never answers: the page dies
        for _ in range(100):
            if env._crashed:
                break
            await asyncio.sleep(0.05)
        crash.cancel()
        obs = await env.step("scroll [down]")
        assert "crashed" in obs.error
        assert env.context is not old_context
        assert obs.url.endswith("page2.html") and obs.first("heading", "Page two") is not None
        obs = await env.step(f"click [{el(obs, 'link', 'Back to form')}]")
        assert obs.error is None and obs.url.endswith("form.html")


async def test_contexts_are_isolated(pages_suite):
    async with launch_browser() as browser:
        a, b = await browser.new_env(pages_suite), await browser.new_env(pages_suite)
        oa, ob = await a.reset(pages_suite.task()), await b.reset(pages_suite.task())
        oa = await a.step(f"click [{el(oa, 'link', 'Second page')}]")
        ob = await b.step("scroll [down]")
        assert oa.url.endswith("page2.html") and ob.url.endswith("form.html")
