"""The browser environment: `reset(task) -> Observation`, `step(action) -> Observation`.

One chromium per process (`launch_browser`), one isolated context per environment, so many
episodes run concurrently. Everything that can go wrong in a step (an unparsable action, an
unknown id, a timeout, a refused request, a crashed page) comes back as `Observation.error`,
never as an exception, because the agent must read it and go on. Error lines are capped at
`MAX_ERROR_CHARS` (the cut marked) before they reach a prompt or a record.

One failure is not the agent's: chromium itself dying. Then the call in flight raises
`BrowserCrashed` (the episode is lost: the caller records an error episode), and the next
`reset()` or `new_env()` relaunches chromium, so the other episodes go on.

Another is a page that never answers (a script in `while(true){}`, a load that never ends): every
call on it waits forever. A caller bounds its calls with `within(seconds, call)`; past the
deadline the context is closed (the hung renderer with it) and `PageHung` raised, and the next
`reset()` opens a fresh context.

The task's allowlist applies to every request the page makes (DESIGN.md, "The browser and
the suites"): the context's route sees the first request of every page, frame, tab and
worker; a `Fetch` interception on the page's own CDP session sees each redirect hop as well
(Playwright passes hops on without asking its route). Refused requests, new tabs closed and
`javascript:` links not followed are reported in the next observation's error.

After an action the page is given time to settle: pending navigations are awaited, then the
DOM must be quiet for `quiet_ms` (capped by `settle_timeout_s`); there is no fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, TypeVar
from urllib.parse import urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from evolver_core.contracts.actions import Action, ActionParseError, parse_action
from evolver_core.browser.allowlist import host_port, request_allowed, url_allowed
from evolver_core.browser.execute import ActionError, act_on_element, describe, scroll, with_timeout
from evolver_core.browser.launch import CHROMIUM_ARGS, PageTimeout, chromium_path
from evolver_core.contracts.observation import Observation
from evolver_core.browser.observe import DEFAULT_MAX_ELEMENTS, observe
from evolver_core.contracts.text import cap_text
from evolver_core.contracts.task import ActionEvent, EpisodeState, Suite, Task

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ERROR_CHARS = 1000  # the longest error line an observation carries
URL_ECHO_CHARS = 200  # how much of a refused URL the error line repeats

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

# Every frame: a click on a `javascript:` link runs the page's own click handlers but not the
# URL (no host to check it against), and says so on the console unless the URL does nothing
# (`javascript:void(0)`, the common placeholder of links with a click handler). The console
# function is taken before the page's scripts can replace it.
_REFUSED_MARK = "webevolver-refused "
_JS_LINK_GUARD = """
(() => {
  const report = console.debug.bind(console);
  window.addEventListener('click', event => {
    const link = event.target instanceof Element ? event.target.closest('a[href], area[href]') : null;
    const href = link ? link.getAttribute('href').trim() : '';
    if (!/^javascript:/i.test(href)) return;
    event.preventDefault();
    if (!/^javascript:\\s*(void\\s*\\(?\\s*0\\s*\\)?)?\\s*;?\\s*$/i.test(href)) report('MARK' + href);
  }, true);
})();
""".replace("MARK", _REFUSED_MARK)

# Console errors of requests chromium refuses by itself; reported like ours.
_CHROMIUM_REFUSALS = {
    "Not allowed to load local resource: ": "navigation",
    "Not allowed to navigate top frame to data URL: ": "navigation",
}

_REFUSAL_TEXT = {
    "navigation": "navigation to {} was refused",
    "frame": "a frame from {} was refused",
    "popup": "a new tab for {} was refused and closed",
    "javascript": "the link {} was not followed",
}


@dataclass(frozen=True)
class EnvConfig:
    viewport_width: int = 1280
    viewport_height: int = 720
    max_elements: int = DEFAULT_MAX_ELEMENTS
    action_timeout_s: float = 3.0  # a click on an unclickable node must not cost 5 s+ per step
    settle_timeout_s: float = 5.0
    quiet_ms: int = 100
    xhr_wait_s: float = 2.0


class BrowserCrashed(RuntimeError):
    """Chromium died under an episode: that episode is lost; the next `reset()` or `new_env()`
    relaunches chromium."""


class PageHung(PageTimeout):
    """A call on the page did not return within its deadline: that episode is lost; the context
    was closed, so the next `reset()` opens a fresh one."""


def task_allowlist(task: Task) -> tuple[str, ...]:
    return task.allowed_hosts or (host_port(urlsplit(task.start_url)),)


def refusal_notice(refused: dict[str, str], allowlist: tuple[str, ...]) -> str | None:
    """One sentence about the requests refused since the last observation (url -> kind)."""
    if not refused:
        return None
    parts = [_REFUSAL_TEXT[kind].format(cap_text(url, URL_ECHO_CHARS))
             for url, kind in refused.items() if kind in _REFUSAL_TEXT]
    others = [url for url, kind in refused.items() if kind == "request"]
    if others:
        parts.append(f"{len(others)} request(s) of the page were refused "
                     f"(first: {cap_text(others[0], URL_ECHO_CHARS)})")
    hosts = "any http(s) site" if "*" in allowlist else ", ".join(allowlist)
    return f"{'; '.join(parts)}: this task may only visit {hosts}"


def _frame_of(request: Any) -> Any | None:
    """The request's frame; None for a new tab's first request (its frame does not exist yet)."""
    try:
        return request.frame
    except PlaywrightError:
        return None


def _route_kind(request: Any) -> str:
    if request.resource_type != "document":
        return "request"
    frame = _frame_of(request)
    if frame is None:
        return "popup"
    return "navigation" if frame.parent_frame is None else "frame"


def _socket_as_http(url: str) -> str:
    """ws(s):// as the http(s):// URL the allowlist judges."""
    return "http" + url[2:] if url.startswith("ws") else url


def _lost_page(exc: PlaywrightError) -> bool:
    text = str(exc).lower()
    return "crash" in text or "closed" in text


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
        self._refused: dict[str, str] = {}  # url -> kind, since the last observation
        self._popups: set[asyncio.Task] = set()
        self._nav_started = False
        self._navigated = asyncio.Event()
        self._xhr_inflight: set = set()

    @property
    def allowlist(self) -> tuple[str, ...]:
        return task_allowlist(self.task) if self.task is not None else ("*",)

    # -- lifecycle -------------------------------------------------------------------------
    async def _open(self) -> None:
        self.context = await self.session.browser.new_context(
            viewport={"width": self.config.viewport_width, "height": self.config.viewport_height},
            service_workers="block")  # a service worker's requests would pass by the route
        await self.context.route("**/*", self._route)
        await self.context.route_web_socket(lambda url: not self._allows(_socket_as_http(url), False),
                                            self._refuse_socket)
        await self.context.add_init_script(_JS_LINK_GUARD)
        await self._use_page(await self.context.new_page())

    async def _use_page(self, page: Any) -> None:
        self.page = page
        self.cdp = cdp = await self.context.new_cdp_session(page)
        main_frame = (await cdp.send("Page.getFrameTree"))["frameTree"]["frame"]["id"]
        cdp.on("Fetch.requestPaused", lambda event: self._enforce(cdp, main_frame, event))
        await cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
        self._crashed = False
        page.on("crash", lambda _: setattr(self, "_crashed", True))
        page.on("request", self._on_request)
        page.on("requestfinished", self._on_request_done)
        page.on("requestfailed", self._on_request_done)
        page.on("framenavigated", self._on_navigated)
        page.on("popup", self._on_popup)
        page.on("console", self._on_console)

    async def close(self) -> None:
        """Close the context; bounded, since a hung renderer might not answer (chromium closes
        the context with the browser in any case)."""
        for task in self._popups:
            task.cancel()
        if self.context is not None:
            try:
                await asyncio.wait_for(self.context.close(), self.config.settle_timeout_s)
            except TimeoutError:
                log.warning("a browser context did not close within %g s; left to chromium",
                            self.config.settle_timeout_s)
            except PlaywrightError:
                pass  # it died with its browser
            self.context = None

    async def within(self, seconds: float, call: Awaitable[T]) -> T:
        """`call` (this env's `reset`, `step`, or a suite's call on its page), cut at `seconds`:
        past them the context is closed and `PageHung` raised."""
        window = asyncio.timeout(seconds)
        try:
            async with window:
                return await call
        except TimeoutError:
            if not window.expired():  # the call's own timeout, not ours
                raise
        await self.close()
        raise PageHung(f"the page did not answer within {seconds:g} s (a script that never yields, or a load "
                       "that never ends); the page was closed")

    # -- the allowlist -----------------------------------------------------------------------
    def _allows(self, url: str, document: bool) -> bool:
        return self.task is None or request_allowed(url, self.allowlist, document=document)

    def _refuse(self, url: str, kind: str) -> None:
        self._refused.setdefault(url, kind)

    async def _route(self, route: Any) -> None:
        request = route.request
        if self._allows(request.url, request.resource_type == "document"):
            await route.continue_()
            return
        self._refuse(request.url, _route_kind(request))
        await route.abort("blockedbyclient")

    async def _enforce(self, cdp: Any, main_frame: str, event: dict) -> None:
        """Every request of this page, each redirect hop included: continue it or fail it."""
        url, document = event["request"]["url"], event.get("resourceType") == "Document"
        try:
            if self._allows(url, document):
                await cdp.send("Fetch.continueRequest", {"requestId": event["requestId"]})
                return
            kind = ("navigation" if event.get("frameId") == main_frame else "frame") if document else "request"
            self._refuse(url, kind)
            await cdp.send("Fetch.failRequest", {"requestId": event["requestId"], "errorReason": "BlockedByClient"})
        except PlaywrightError:
            pass  # the page closed while its request waited

    async def _refuse_socket(self, socket: Any) -> None:
        self._refuse(socket.url, "request")
        await socket.close()  # never connected: the server is not contacted

    # -- event hooks -----------------------------------------------------------------------
    def _on_request(self, request: Any) -> None:
        if request.resource_type in ("fetch", "xhr"):
            self._xhr_inflight.add(request)
        elif request.is_navigation_request() and (frame := _frame_of(request)) is not None \
                and frame.parent_frame is None:
            self._nav_started = True

    def _on_request_done(self, request: Any) -> None:
        self._xhr_inflight.discard(request)

    def _on_navigated(self, frame: Any) -> None:
        if frame.parent_frame is None:
            self._navigated.set()
            self.urls.append(frame.url)

    def _on_console(self, message: Any) -> None:
        text = message.text
        if message.type == "debug" and text.startswith(_REFUSED_MARK):
            self._refuse(text[len(_REFUSED_MARK):], "javascript")
        for prefix, kind in _CHROMIUM_REFUSALS.items():
            if message.type == "error" and text.startswith(prefix):
                self._refuse(text[len(prefix):].strip(), kind)

    def _on_popup(self, page: Any) -> None:
        task = asyncio.ensure_future(self._adopt(page))
        self._popups.add(task)
        task.add_done_callback(self._popups.discard)

    async def _adopt(self, popup: Any) -> None:
        """A tab the page opened becomes the current page (the tab lines show both) when it
        shows an allowed page; otherwise it is closed and reported. Its first page was checked
        by the route; this also catches a redirect hop of that first load, which no interception
        of ours saw (the tab's own session did not exist yet)."""
        with contextlib.suppress(PlaywrightError):
            await popup.wait_for_load_state("domcontentloaded", timeout=self.config.settle_timeout_s * 1000)
        if popup.is_closed():
            return
        if popup.url != "about:blank" and url_allowed(popup.url, self.allowlist):
            await self._use_page(popup)
            return
        if not popup.url.startswith("chrome-error:"):  # an error page: the route refused it, and said so
            self._refuse(popup.url, "popup")
        with contextlib.suppress(PlaywrightError):
            await popup.close()

    # -- episode ---------------------------------------------------------------------------
    async def reset(self, task: Task) -> Observation:
        """Start `task`: the suite puts the page at its start state; returns the first observation
        (its error says what the page tried and was refused while loading)."""
        await self.session.ensure_browser()
        async with self._fatal_if_browser_dies():
            if self.context is None or self._crashed or self.context.browser is not self.session.browser:
                await self.close()
                await self._open()
            self.task, self.urls, self.observations, self.events = task, [], [], []
            self._refused = {}
            self.task = await self.suite.begin(task, self.page)
            await self._settle()
            return await self._observe(None)

    async def step(self, action: str | Action) -> Observation:
        """Carry out one action; any failure is reported in the returned observation's `error`.
        Raises `BrowserCrashed` only when chromium itself died."""
        if self.task is None:
            raise RuntimeError("call reset(task) before step()")
        async with self._fatal_if_browser_dies():
            return await self._step(action)

    async def screenshot(self) -> bytes | None:
        """A PNG of the viewport as it is now (take it right after an observation: the page the
        agent sees); None on failure, logged, since a missing picture must not end an episode.

        PNG, not JPEG: pages are mostly flat colour and text, which PNG keeps sharp at about a
        JPEG's size (RESULTS.md R4). The viewport only, as the observation covers the viewport
        too. The caret is left as it is (hiding it would inject a style into the page).
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
    @asynccontextmanager
    async def _fatal_if_browser_dies(self) -> AsyncIterator[None]:
        """Whatever failed while chromium died becomes `BrowserCrashed` (the suite's code may
        raise its own errors for a dead page)."""
        try:
            yield
        except Exception as exc:
            if not await self.session.died():
                raise
            self.context = None  # it died with the browser
            raise BrowserCrashed(f"chromium died during the episode of {self.task.id if self.task else '?'} "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                 "the next reset() relaunches it") from exc

    async def _step(self, action: str | Action) -> Observation:
        try:
            parsed = action if isinstance(action, Action) else parse_action(action)
        except ActionParseError as exc:
            return await self._observe(f"Invalid action: {exc}. Use one action of the grammar, e.g. click [3].")
        if self._crashed:
            return await self._recover()
        self._nav_started = False
        self._navigated.clear()
        error = None
        try:
            await self._execute(parsed)
        except ActionError as exc:
            error = str(exc)
        except PlaywrightError as exc:
            if self._crashed or _lost_page(exc):
                if await self.session.died():
                    raise
                return await self._recover()
            error = f"{describe(parsed)} failed: {str(exc).splitlines()[0]}"
        if self._crashed:
            return await self._recover()
        await self._settle()
        return await self._observe(error)

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
                                      describe(action))
            self.events.append(ActionEvent(url=url, element_path=done["path"], element_value=done["value"],
                                           action=done["kind"], matched_selectors=frozenset(done["matched"])))
        elif action.name == "scroll":
            await with_timeout(scroll(self.page, action.direction or "down"), t, "scroll")
        elif action.name == "goback":
            back = self.page.go_back(wait_until="commit")
            if await with_timeout(back, self.config.settle_timeout_s, "goback") is None:
                raise ActionError("there is no previous page to go back to")
        elif action.name == "restart":
            assert self.task is not None
            await with_timeout(self.page.goto(self.task.start_url, wait_until="commit"),
                               self.config.settle_timeout_s, "restart")
        elif action.name == "wait":
            await asyncio.sleep(self.config.quiet_ms / 1000 * 5)
        # stop: nothing to execute; the rollout ends the episode.

    async def _settle(self) -> None:
        """Let the page settle (`_settle_page`), adopt or close the tabs it opened meanwhile, and
        leave the error page a refused navigation left behind."""
        await self._settle_page()
        if self._popups:
            # `_adopt` itself waits up to settle_timeout_s for the tab's load, then closes or
            # adopts it: waiting only as long raced it on a busy machine (a refused tab was
            # reported but still open in the observation).
            await asyncio.wait(self._popups, timeout=2 * self.config.settle_timeout_s)
            await self._settle_page()
        if self._refused and not url_allowed(self.page.url, self.allowlist):
            await self._leave_error_page()

    async def _settle_page(self) -> None:
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
                if not self.session.browser.is_connected():
                    raise
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
        await self._settle_page()

    async def _observe(self, error: str | None) -> Observation:
        """The observation; its error is the action's, then what was refused since the last one."""
        obs = await observe(self.page, self.cdp, max_elements=self.config.max_elements)
        notice, self._refused = refusal_notice(self._refused, self.allowlist), {}
        text = " ".join(part for part in (error, notice) if part)
        obs.error = cap_text(text, MAX_ERROR_CHARS) if text else None
        self.observations.append(obs)
        return obs

    async def _recover(self) -> Observation:
        """The page crashed: rebuild the context, reload the last good URL, report it."""
        assert self.task is not None
        url = next((u for u in reversed(self.urls) if url_allowed(u, self.allowlist)), self.task.start_url)
        await self.close()
        await self._open()
        try:
            await self.page.goto(url, wait_until="domcontentloaded", timeout=self.config.settle_timeout_s * 1000)
        except PlaywrightError:
            pass
        await self._settle()
        return await self._observe(f"The page crashed; the browser was restarted at {cap_text(url, URL_ECHO_CHARS)}. "
                                   "Anything typed or selected before the crash is lost.")


async def _launch(playwright: Any, headless: bool) -> Any:
    return await playwright.chromium.launch(executable_path=chromium_path(), headless=headless, args=CHROMIUM_ARGS)


class BrowserSession:
    """One chromium process; hands out isolated environments, and relaunches chromium when it died."""

    def __init__(self, playwright: Any, browser: Any, *, headless: bool = True):
        self.playwright, self.headless = playwright, headless
        self._relaunch = asyncio.Lock()
        self._use(browser)

    def _use(self, browser: Any) -> None:
        self.browser = browser
        self._gone = asyncio.Event()
        browser.on("disconnected", lambda _: self._gone.set())

    async def died(self) -> bool:
        """Whether chromium is gone. Asked when a call failed: the disconnect event may trail
        that call's error by a moment, so it is given half a second."""
        if self.browser.is_connected():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._gone.wait(), 0.5)
        return not self.browser.is_connected()

    async def ensure_browser(self) -> None:
        """Relaunch chromium if it died: once, however many environments ask at the same time."""
        async with self._relaunch:
            if not self.browser.is_connected():
                log.warning("chromium died; relaunching it")
                self._use(await _launch(self.playwright, self.headless))

    async def new_env(self, suite: Suite, config: EnvConfig | None = None) -> BrowserEnv:
        await self.ensure_browser()
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
        session = BrowserSession(p, await _launch(p, headless), headless=headless)
        try:
            yield session
        finally:
            await session.browser.close()
