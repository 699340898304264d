"""The browser environment: `reset(task) -> Observation`, `step(action) -> Observation`.

One chromium per process (`launch_browser`), one isolated context per environment, so many
episodes run concurrently. Everything that can go wrong in a step (an unparsable action, an
unknown id, a timeout, a refused navigation, a crashed page) comes back as
`Observation.error`, never as an exception, because the agent must read it and go on.

After an action the page is given time to settle: pending navigations are awaited, then the
DOM must be quiet for `quiet_ms` (capped by `settle_timeout_s`); there is no fixed sleep.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from evolver_core.browser.allowlist import url_allowed
from evolver_core.browser.actions import Action, ActionParseError, format_action, parse_action
from evolver_core.browser.execute import ActionError, act_on_element, scroll, with_timeout
from evolver_core.browser.launch import CHROMIUM_ARGS, chromium_path
from evolver_core.browser.observation import Observation
from evolver_core.browser.observe import DEFAULT_MAX_ELEMENTS, observe
from evolver_core.suites.base import ActionEvent, EpisodeState, Suite, Task

log = logging.getLogger(__name__)

_QUIET_JS = """
([quietMs, maxMs]) => new Promise(resolve => {
  let timer;
  const done = () => { observer.disconnect(); clearTimeout(timer); clearTimeout(cap); resolve(true); };
  const observer = new MutationObserver(() => { clearTimeout(timer); timer = setTimeout(done, quietMs); });
  observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  timer = setTimeout(done, quietMs);
  const cap = setTimeout(done, maxMs);
})
"""


@dataclass(frozen=True)
class EnvConfig:
    viewport_width: int = 1280
    viewport_height: int = 720
    max_elements: int = DEFAULT_MAX_ELEMENTS
    action_timeout_s: float = 3.0  # a click on an unclickable node must not cost 5 s+ per step
    settle_timeout_s: float = 5.0
    quiet_ms: int = 100
    xhr_wait_s: float = 2.0


def task_allowlist(task: Task) -> tuple[str, ...]:
    return task.allowed_hosts or (urlsplit(task.start_url).netloc,)


class BrowserEnv:
    """One isolated browser context running one episode at a time."""

    def __init__(self, session: "BrowserSession", suite: Suite, config: EnvConfig):
        self.session, self.suite, self.config = session, suite, config
        self.context: Any = None
        self.page: Any = None
        self.cdp: Any = None
        self.task: Task | None = None
        self.urls: list[str] = []
        self.observations: list[Observation] = []
        self.events: list[ActionEvent] = []
        self._crashed = False
        self._blocked: list[str] = []
        self._nav_started = False
        self._navigated = asyncio.Event()
        self._xhr_inflight: set = set()

    # -- lifecycle -------------------------------------------------------------------------
    async def _open(self) -> None:
        self.context = await self.session.browser.new_context(
            viewport={"width": self.config.viewport_width, "height": self.config.viewport_height})
        await self.context.route("**/*", self._route)
        await self._use_page(await self.context.new_page())

    async def _use_page(self, page: Any) -> None:
        self.page = page
        self.cdp = await self.context.new_cdp_session(page)
        self._crashed = False
        page.on("crash", lambda _: setattr(self, "_crashed", True))
        page.on("request", self._on_request)
        page.on("requestfinished", self._on_request_done)
        page.on("requestfailed", self._on_request_done)
        page.on("framenavigated", self._on_navigated)
        page.on("popup", self._on_popup)
        page.on("console", self._on_console)

    async def close(self) -> None:
        if self.context is not None:
            try:
                await self.context.close()
            except PlaywrightError:
                pass
            self.context = None

    # -- event hooks -----------------------------------------------------------------------
    async def _route(self, route: Any) -> None:
        request = route.request
        if (self.task is not None and request.is_navigation_request()
                and request.frame.parent_frame is None
                and not url_allowed(request.url, task_allowlist(self.task))):
            self._blocked.append(request.url)
            await route.abort("blockedbyclient")
            return
        await route.continue_()

    def _on_request(self, request: Any) -> None:
        if request.is_navigation_request() and request.frame.parent_frame is None:
            self._nav_started = True
        elif request.resource_type in ("fetch", "xhr"):
            self._xhr_inflight.add(request)

    def _on_request_done(self, request: Any) -> None:
        self._xhr_inflight.discard(request)

    def _on_navigated(self, frame: Any) -> None:
        if frame.parent_frame is None:
            self._navigated.set()
            self.urls.append(frame.url)

    def _on_console(self, message: Any) -> None:
        # Chromium itself refuses file:// links from web pages; report them like our refusals.
        prefix = "Not allowed to load local resource: "
        if message.type == "error" and message.text.startswith(prefix):
            self._blocked.append(message.text[len(prefix):].strip())

    def _on_popup(self, page: Any) -> None:
        # A new tab the page opened becomes the current one (the tab lines show both).
        asyncio.ensure_future(self._use_page(page))

    # -- episode ---------------------------------------------------------------------------
    async def reset(self, task: Task) -> Observation:
        """Start `task`: the suite puts the page at its start state; returns the first observation."""
        if self.context is None or self._crashed:
            await self.close()
            await self._open()
        self.task, self.urls, self.observations, self.events = task, [], [], []
        self._blocked = []
        self.task = await self.suite.begin(task, self.page)
        await self._settle()
        return await self._observe(None)

    async def step(self, action: str | Action) -> Observation:
        """Carry out one action; any failure is reported in the returned observation's `error`."""
        if self.task is None:
            raise RuntimeError("call reset(task) before step()")
        try:
            parsed = action if isinstance(action, Action) else parse_action(action)
        except ActionParseError as exc:
            return await self._observe(f"Invalid action: {exc}. Use one action of the grammar, e.g. click [3].")
        if self._crashed:
            return await self._recover()
        self._blocked, self._nav_started = [], False
        self._navigated.clear()
        error = None
        try:
            await self._execute(parsed)
        except ActionError as exc:
            error = str(exc)
        except PlaywrightError as exc:
            if self._crashed or "crash" in str(exc).lower() or "closed" in str(exc).lower():
                return await self._recover()
            error = f"{format_action(parsed)} failed: {str(exc).splitlines()[0]}"
        if self._crashed:
            return await self._recover()
        await self._settle()
        if self._blocked:
            if not url_allowed(self.page.url, task_allowlist(self.task)):
                await self._leave_error_page()
            error = (f"navigation to {self._blocked[0]} was refused: this task may only visit "
                     f"{', '.join(task_allowlist(self.task))}")
        return await self._observe(error)

    async def screenshot(self) -> bytes | None:
        """A PNG of the viewport as it is now (take it right after an observation: the page the
        agent sees); None on failure, logged, since a missing picture must not end an episode.

        PNG, not JPEG: pages are mostly flat colour and text, which PNG keeps sharp at about a
        JPEG's size (measured at 1280x720: sandbox pages 40-90 KB, JPEG q75 10-25% less; MiniWoB
        8 KB, JPEG more). The viewport only, as the observation covers the viewport too. The
        caret is left as it is (hiding it would inject a style into the page).
        """
        try:
            return await self.page.screenshot(type="png", full_page=False, caret="initial",
                                              timeout=self.config.settle_timeout_s * 1000)
        except PlaywrightError as exc:
            log.warning("screenshot of %s failed: %s", getattr(self.page, "url", "?"), str(exc).splitlines()[0])
            return None

    def episode_state(self, answer: str | None) -> EpisodeState:
        assert self.task is not None
        return EpisodeState(task=self.task, answer=answer, urls=list(self.urls),
                            observations=list(self.observations), page=self.page, events=list(self.events))

    # -- internals -------------------------------------------------------------------------
    async def _execute(self, action: Action) -> None:
        t = self.config.action_timeout_s
        if action.name in ("click", "type"):
            obs = self.observations[-1] if self.observations else None
            backend = obs.node_map.get(action.element_id or 0) if obs else None
            if backend is None:
                raise ActionError(f"there is no element [{action.element_id}] in the current observation")
            url = self.page.url
            watch = (self.task.meta.get("watch_selectors") if self.task else None) or None
            done = await with_timeout(act_on_element(self.page, self.cdp, action, backend, watch), t,
                                      format_action(action))
            self.events.append(ActionEvent(url=url, element_path=done["path"], element_value=done["value"],
                                           action=done["kind"], matched_selectors=frozenset(done["matched"])))
        elif action.name == "scroll":
            await with_timeout(scroll(self.page, action.direction or "down"), t, "scroll")
        elif action.name == "goback":
            if await with_timeout(self.page.go_back(wait_until="commit"), self.config.settle_timeout_s, "goback") is None:
                raise ActionError("there is no previous page to go back to")
        elif action.name == "restart":
            assert self.task is not None
            await with_timeout(self.page.goto(self.task.start_url, wait_until="commit"),
                               self.config.settle_timeout_s, "restart")
        elif action.name == "wait":
            await asyncio.sleep(self.config.quiet_ms / 1000 * 5)
        # stop: nothing to execute; the rollout ends the episode.

    async def _settle(self) -> None:
        """Wait for pending navigations, XHR/fetch calls, then a quiet DOM; never longer than the cap.

        A navigation may start only after the action returned (a form submitted on Enter), so
        the check for one is repeated after the DOM went quiet. XHR/fetch calls are waited for
        at most `xhr_wait_s`: live sites keep analytics and long-polling requests open.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.settle_timeout_s
        while (left := deadline - loop.time()) > 0:
            try:
                if self._nav_started and not self._navigated.is_set():
                    await asyncio.wait_for(self._navigated.wait(), left)
                await self.page.wait_for_load_state("domcontentloaded", timeout=left * 1000)
                await self._wait_xhr(min(left, self.config.xhr_wait_s))
                await self.page.evaluate(_QUIET_JS, [self.config.quiet_ms, int(left * 1000)])
            except asyncio.TimeoutError:
                return
            except PlaywrightError:
                continue  # the document was replaced under the script: settle the new one
            if not (self._nav_started and not self._navigated.is_set()) and not self._xhr_inflight:
                return

    async def _wait_xhr(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while self._xhr_inflight and loop.time() < end:
            await asyncio.sleep(0.02)

    async def _leave_error_page(self) -> None:
        """A refused navigation leaves chromium's error page; return to where the agent was."""
        try:
            await self.page.go_back(wait_until="domcontentloaded", timeout=self.config.settle_timeout_s * 1000)
        except PlaywrightError:
            pass
        await self._settle()

    async def _observe(self, error: str | None) -> Observation:
        obs = await observe(self.page, self.cdp, max_elements=self.config.max_elements)
        obs.error = error
        self.observations.append(obs)
        return obs

    async def _recover(self) -> Observation:
        """The page crashed: rebuild the context, reload the last good URL, report it."""
        assert self.task is not None
        url = next((u for u in reversed(self.urls) if url_allowed(u, task_allowlist(self.task))), self.task.start_url)
        await self.close()
        await self._open()
        try:
            await self.page.goto(url, wait_until="domcontentloaded", timeout=self.config.settle_timeout_s * 1000)
        except PlaywrightError:
            pass
        await self._settle()
        return await self._observe(f"The page crashed; the browser was restarted at {url}. "
                                   "Anything typed or selected before the crash is lost.")


class BrowserSession:
    """One chromium process; hands out isolated environments."""

    def __init__(self, playwright: Any, browser: Any):
        self.playwright, self.browser = playwright, browser

    async def new_env(self, suite: Suite, config: EnvConfig | None = None) -> BrowserEnv:
        env = BrowserEnv(self, suite, config or EnvConfig())
        await env._open()
        return env

    async def observe_url(self, url: str, config: EnvConfig | None = None) -> Observation:
        """The observation of any page (for `webevolver observe`); no allowlist."""
        cfg = config or EnvConfig()
        context = await self.browser.new_context(viewport={"width": cfg.viewport_width, "height": cfg.viewport_height})
        try:
            page = await context.new_page()
            await page.goto(url, wait_until="domcontentloaded")
            await page.evaluate(_QUIET_JS, [cfg.quiet_ms, int(cfg.settle_timeout_s * 1000)])
            return await observe(page, await context.new_cdp_session(page), max_elements=cfg.max_elements)
        finally:
            await context.close()


@asynccontextmanager
async def launch_browser(*, headless: bool = True) -> AsyncIterator[BrowserSession]:
    """Start Debian chromium (see launch.py) and close it, and every context, on exit."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), headless=headless, args=CHROMIUM_ARGS)
        try:
            yield BrowserSession(p, browser)
        finally:
            await browser.close()
