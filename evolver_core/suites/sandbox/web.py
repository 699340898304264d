"""Serving one sandbox site: a stdlib threaded HTTP server on 127.0.0.1 with per-visitor state.

Why this shape: the sandbox suite needs multi-page websites that run offline, deterministically
and under several browser contexts at once. Each site gets its own port, so its `host:port` is
the episode's navigation allowlist. Browsers share cookies across the ports of one host, so
each site names its own session cookie (`sid_<site>`). Per-visitor state (a cart, saved items)
lives on the server, keyed by that cookie, and two endpoints serve the evaluator:

* `GET /__state` returns the current visitor's state as JSON;
* `GET|POST /__reset` starts a fresh visitor (a new cookie, empty state).

This module is the small framework the five sites share. A site (a `Site` subclass, one
module each) is its data, its routes, whose handlers pick what a page shows and call
`Site.render`, and its task templates (spec.py). Its pages are Jinja2 templates, autoescaped:
`templates/<site>/<page>.html.j2` extend the site's `layout.html.j2` (its header links and
colour), which extends the shared `base.html.j2` (head, header with the search box, flash
note, optional sidebar, footer); `templates/macros.html.j2` holds the shared widgets (link
lists, pager, sort bar, facets, one-button POST forms), and a page a site does not define
is looked up in `templates/` (`not_found`, `saved`). No JavaScript beyond one inline
`onchange` submit. Threads and shutdown come from `evolver_core.suites.httpserver.LocalHTTPServer`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Generic, Iterable, Mapping, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from evolver_core.contracts.text import html_templates
from evolver_core.suites.httpserver import LocalHTTPServer
from evolver_core.suites.sandbox.spec import Pools, TaskSpec, choose

MAX_SESSIONS = 4096  # oldest visitors are forgotten beyond this

T = TypeVar("T")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    pairs: list[tuple[str, str]]  # the POSTed form fields, in order (a name may repeat)
    state: dict[str, Any]  # this visitor's mutable state

    @property
    def form(self) -> dict[str, str]:
        return dict(self.pairs)

    def form_values(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, default).strip()

    def page_number(self) -> int:
        value = self.arg("page", "1")
        return max(1, int(value)) if value.isdigit() else 1


@dataclass
class Response:
    body: str = ""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def redirect(location: str) -> Response:
    return Response(status=303, headers={"Location": location})


Handler = Callable[..., Response]
Route = tuple[str, "re.Pattern[str]", Handler]  # method, full-match path pattern, handler(req, **groups)


def route(method: str, pattern: str, handler: Handler) -> Route:
    return (method, re.compile(pattern), handler)


def url(path: str, params: Mapping[str, object] | None = None, /, **change: object) -> str:
    """`path` with `params` updated by `change` as a query string (in order), empty values left out."""
    merged = {**(params or {}), **change}
    query = urlencode([(k, str(v)) for k, v in merged.items() if v not in (None, "")])
    return f"{path}?{query}" if query else path


def counted(n: int, noun: str) -> str:
    """'1 result', '3 results'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def query_links(path: str, terms: Iterable[str]) -> list[tuple[str, str]]:
    """A link per term to the search at `path` (an article's tags, a repository's topics)."""
    return [(t, url(path, q=t)) for t in terms]


def words(text: str, pattern: str = r"[a-z0-9]+", stem: bool = False) -> set[str]:
    """The lower-case words of `text` a site's search matches on (all query words must match);
    `stem` drops a plural 's' from words longer than three letters."""
    found = re.findall(pattern, text.lower())
    return {w[:-1] if stem and len(w) > 3 and w.endswith("s") else w for w in found}


class Facet(NamedTuple):
    """A sidebar filter: its heading, its (label, href) links, and the label now chosen."""

    heading: str
    links: list[tuple[str, str]]
    current: str


@dataclass(frozen=True)
class Paged(Generic[T]):
    """One page of a list: its items, the clamped page number, the page count, the list length."""

    items: list[T]
    page_no: int
    pages: int
    total: int
    per_page: int

    @property
    def first(self) -> int:
        """The 1-based position of the page's first item."""
        return (self.page_no - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1

    def links(self, path: str, params: Mapping[str, object]) -> list[tuple[str, str]]:
        """The pager's links: Previous, the numbered pages, Next (the current page is str(page_no))."""
        numbered = [(str(n), url(path, params, page=n)) for n in range(1, self.pages + 1)]
        before = [("Previous", url(path, params, page=self.page_no - 1))] if self.page_no > 1 else []
        after = [("Next", url(path, params, page=self.page_no + 1))] if self.page_no < self.pages else []
        return before + numbered + after


def paginate(items: list[T], page_no: int, per_page: int) -> Paged[T]:
    pages = max(1, -(-len(items) // per_page))
    page_no = min(page_no, pages)
    return Paged(items[(page_no - 1) * per_page : page_no * per_page], page_no, pages, len(items), per_page)


PAGES = html_templates("evolver_core.suites.sandbox")
PAGES.globals.update(url=url, counted=counted, query_links=query_links)


class Site:
    """One website: its routes, the initial visitor state, its pages' globals and the task specs it offers."""

    name: str = ""
    title: str = ""
    brand: str = ""  # the header's site name, where it is shorter than `title`
    search_action: str = "/search"  # the header's search box
    search_label: str = ""
    search_placeholder: str = ""
    pools: Pools  # the site's train/test partition of its entities (spec.py)
    page_globals: Mapping[str, Any] = {}  # what every page of the site may use (formatters, constants)

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def initial_state(self) -> dict[str, Any]:
        return {}

    def public_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """The JSON the evaluator reads from `/__state` (private keys start with '_')."""
        return {k: v for k, v in state.items() if not k.startswith("_")}

    def render(self, req: Request, page: str, title: str, /, *, status: int = 200, **context: Any) -> Response:
        """The template of `page` (the site's own, else the shared one) as a full HTML page."""
        template = PAGES.select_template([f"{self.name}/{page}.html.j2", f"{page}.html.j2"])
        html = template.render(
            **self.page_globals,
            **context,
            layout=f"{self.name}/layout.html.j2",
            site=self,
            title=title,
            flash=req.state.pop("_flash", ""),
            query=req.arg("q"),
            state=req.state,
        )
        return Response(html, status=status)

    def not_found(self, req: Request) -> Response:
        return self.render(req, "not_found", "Page not found", status=404)

    def handle(self, req: Request) -> Response:
        for method, pattern, handler in self.routes():
            if method == req.method and (m := pattern.fullmatch(req.path)):
                return handler(req, **m.groupdict())
        return self.not_found(req)

    # --- tasks ---------------------------------------------------------------------------

    def task_specs(self) -> list[TaskSpec]:
        """The tasks of the site's @template methods (spec.template), in definition order."""
        makers = [m for m in vars(type(self)).values() if hasattr(m, "template")]
        return [
            spec
            for make in makers
            for spec in choose(self.name, make.template[0], make(self), self.pools, test_only=make.template[1])
        ]

    def opening(self, entity: Any) -> list[dict[str, Any]]:
        """The plan steps that bring the solver to `entity`'s page (from the home page)."""
        raise NotImplementedError

    def about(self, entity: Any, query: str, gold: dict[str, Any], *steps: dict[str, Any]) -> TaskSpec:
        """A task on one entity's page: open it (`opening`), then `steps`."""
        return TaskSpec(query, gold, (entity.key,), (*self.opening(entity), *steps))


def save_item(req: Request, key: str, item: str, flash: str, back: str) -> Response:
    """Adds `item` once to the visitor's list `key` (a recipe box, a word list...) and goes `back`."""
    if item not in req.state[key]:
        req.state[key].append(item)
    req.state["_flash"] = flash
    return redirect(back)


def unsave_item(req: Request, key: str, item: str, back: str) -> Response:
    if item in req.state[key]:
        req.state[key].remove(item)
    return redirect(back)


class _Sessions:
    """Visitor states by session id, bounded (least recently used forgotten first)."""

    def __init__(self, factory: Callable[[], dict[str, Any]]):
        self._factory = factory
        self._states: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, sid: str | None) -> dict[str, Any] | None:
        if sid is None or sid not in self._states:
            return None
        self._states.move_to_end(sid)
        return self._states[sid]

    def new(self) -> tuple[str, dict[str, Any]]:
        sid = uuid.uuid4().hex
        self._states[sid] = self._factory()
        while len(self._states) > MAX_SESSIONS:
            self._states.popitem(last=False)
        return sid, self._states[sid]


class SiteServer:
    """Serves one `Site` from a daemon thread (httpserver.LocalHTTPServer); `start()` is idempotent."""

    def __init__(self, site: Site):
        self.site = site
        self.cookie = f"sid_{site.name}"
        self._sessions = _Sessions(site.initial_state)
        self._lock = threading.Lock()  # one request at a time touches site state
        self._http: LocalHTTPServer | None = None

    @property
    def host(self) -> str:
        if self._http is None:
            raise RuntimeError(f"sandbox site {self.site.name!r} is not started")
        return self._http.netloc

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> None:
        if self._http is None:
            self._http = LocalHTTPServer(self._handler_class())

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def respond(self, method: str, raw_path: str, cookie_header: str, body: bytes) -> tuple[Response, str | None]:
        """Handle one request; returns the response and a new session id to set, if any."""
        parts = urlsplit(raw_path)
        cookies = SimpleCookie(cookie_header or "")
        sid = cookies[self.cookie].value if self.cookie in cookies else None
        with self._lock:
            state = self._sessions.get(sid)
            new_sid = None
            if state is None or parts.path == "/__reset":
                new_sid, state = self._sessions.new()
            if parts.path == "/__reset":
                return _json({"ok": True}), new_sid
            if parts.path == "/__state":
                return _json(self.site.public_state(state)), new_sid
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if method == "POST" else []
            req = Request(method, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), pairs, state)
            return self.site.handle(req), new_sid

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str, write_body: bool = True) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                response, new_sid = server.respond(method, self.path, self.headers.get("Cookie", ""), body)
                payload = response.body.encode("utf-8")
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                if new_sid is not None:
                    self.send_header("Set-Cookie", f"{server.cookie}={new_sid}; Path=/; HttpOnly; SameSite=Lax")
                self.end_headers()
                if write_body:
                    self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._serve("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve("GET", write_body=False)

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (quiet)
                return

        return _Handler


def _json(obj: object) -> Response:
    return Response(json.dumps(obj, sort_keys=True), content_type="application/json")
