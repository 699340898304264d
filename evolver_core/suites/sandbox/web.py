"""Serving one sandbox site: a stdlib threaded HTTP server on 127.0.0.1 with per-visitor state.

Why this shape: the sandbox suite needs multi-page websites that run offline, deterministically
and under several browser contexts at once. Each site gets its own port, so its `host:port` is
the episode's navigation allowlist. Browsers share cookies across the ports of one host, so
each site names its own session cookie (`sid_<site>`). Per-visitor state (a cart, saved items)
lives on the server, keyed by that cookie, and two endpoints serve the evaluator:

* `GET /__state` returns the current visitor's state as JSON;
* `GET|POST /__reset` starts a fresh visitor (a new cookie, empty state).

Pages are plain server-rendered HTML built with f-strings and `html.escape` (`esc`), no
JavaScript beyond one inline `onchange` submit; the small helpers here (`Site.page`, `url`,
`link_list`, `pager`, `search_form`, `post_button`, `counted`, `save_item`) keep the five sites'
markup and behaviour consistent. Threads and shutdown come from `evolver_core.suites.httpserver.LocalHTTPServer`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from html import escape
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from evolver_core.suites.httpserver import LocalHTTPServer
from evolver_core.suites.sandbox.spec import Pools, TaskSpec, choose

MAX_SESSIONS = 4096  # oldest visitors are forgotten beyond this


def esc(value: object) -> str:
    return escape(str(value), quote=True)


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


class Site:
    """One website: its routes, the initial visitor state, and the task specs it offers."""

    name: str = ""
    title: str = ""
    brand: str = ""  # the header's site name, where it is shorter than `title`
    search_action: str = "/search"  # the header's search box (search_form)
    search_label: str = ""
    search_placeholder: str = ""
    pools: Pools  # the site's train/test partition of its entities (spec.py)

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def initial_state(self) -> dict[str, Any]:
        return {}

    def public_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """The JSON the evaluator reads from `/__state` (private keys start with '_')."""
        return {k: v for k, v in state.items() if not k.startswith("_")}

    def task_specs(self) -> list[TaskSpec]:
        """The tasks of the site's @template methods (spec.template), in definition order."""
        makers = [m for m in vars(type(self)).values() if hasattr(m, "template")]
        return [
            spec
            for make in makers
            for spec in choose(self.name, make.template[0], make(self), self.pools, test_only=make.template[1])
        ]

    def not_found(self, req: Request) -> Response:
        return Response(
            self.page("Page not found", "<h1>Page not found</h1><p>We could not find that page.</p>", req), status=404
        )

    def page(self, title: str, main: str, req: Request, aside: str = "") -> str:
        """The site's full HTML page around `main` (subclasses add their links via `nav`)."""
        flash = req.state.pop("_flash", "")
        note = f'<p class="flash" role="status">{esc(flash)}</p>' if flash else ""
        body = (
            f'<div class="cols"><aside>{aside}</aside><main>{note}{main}</main></div>'
            if aside
            else f"<main>{note}{main}</main>"
        )
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} | {esc(self.title)}</title>'
            f"<style>{CSS}{self.accent_css()}</style></head><body>{self.header(req)}{body}"
            f"<footer><p>&copy; 2025 {esc(self.title)}. All data on this site is fictional.</p></footer></body></html>"
        )

    def header(self, req: Request) -> str:
        """The banner every site shares: its name, its search box, then the site's own `nav`."""
        box = search_form(self.search_action, self.search_label, req.arg("q"), self.search_placeholder)
        return f'<header><a class="brand" href="/">{esc(self.brand or self.title)}</a>{box}{self.nav(req)}</header>'

    def nav(self, req: Request) -> str:
        raise NotImplementedError

    def accent_css(self) -> str:
        return ""

    def handle(self, req: Request) -> Response:
        for method, pattern, handler in self.routes():
            if method == req.method and (m := pattern.fullmatch(req.path)):
                return handler(req, **m.groupdict())
        return self.not_found(req)


CSS = (
    "body{font:14px/1.35 system-ui,sans-serif;margin:0;color:#222}"
    "header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 18px;padding:6px 16px;background:#24313f;color:#fff}"
    "header a{color:#fff}header .brand{font-weight:700;font-size:18px;text-decoration:none}"
    "header nav a{margin-right:12px}header form{display:flex;gap:4px}header input{width:260px}"
    "main{padding:6px 16px;min-width:0}.cols{display:grid;grid-template-columns:210px 1fr;gap:8px;padding-left:16px}"
    "aside h2{font-size:13px;margin:8px 0 2px}aside ul,.plain{list-style:none;margin:0;padding:0}"
    "h1{font-size:20px;margin:6px 0}h2{font-size:16px;margin:8px 0 4px}h3{font-size:15px;margin:2px 0}"
    ".results>li{padding:4px 0;border-bottom:1px solid #e3e3e3}.results p{margin:1px 0}"
    ".bar{display:flex;flex-wrap:wrap;gap:4px 12px;margin:4px 0}.muted{color:#666}"
    ".flash{background:#e7f6e7;border:1px solid #9c9;padding:4px 8px}"
    "dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:4px 0}dl.facts dd{margin:0}"
    "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}"
    "footer{padding:16px;color:#777;font-size:12px}"
)


def counted(n: int, noun: str) -> str:
    """'1 result', '3 results'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def url(path: str, **params: object) -> str:
    """`path` with the non-empty params as a query string (in the given order)."""
    query = urlencode([(k, str(v)) for k, v in params.items() if v not in (None, "")])
    return f"{path}?{query}" if query else path


def link_list(items: list[tuple[str, str]], current: str = "", label: str = "") -> str:
    """A <ul> of links; the item whose label equals `current` is shown as plain bold text."""
    lis = "".join(
        f"<li><b>{esc(text)}</b></li>" if text == current else f'<li><a href="{esc(href)}">{esc(text)}</a></li>'
        for text, href in items
    )
    aria = f' aria-label="{esc(label)}"' if label else ""
    return f'<ul class="plain"{aria}>{lis}</ul>'


def pager(path: str, params: dict[str, object], page_no: int, pages: int) -> str:
    """Pagination links: Previous, numbered pages, Next."""
    if pages <= 1:
        return ""
    parts = []
    if page_no > 1:
        parts.append(f'<a href="{esc(url(path, **params, page=page_no - 1))}">Previous</a>')
    for n in range(1, pages + 1):
        parts.append(f"<b>{n}</b>" if n == page_no else f'<a href="{esc(url(path, **params, page=n))}">{n}</a>')
    if page_no < pages:
        parts.append(f'<a href="{esc(url(path, **params, page=page_no + 1))}">Next</a>')
    return f'<nav class="bar" aria-label="Pagination">{" ".join(parts)}</nav>'


def paginate(items: list[Any], page_no: int, per_page: int) -> tuple[list[Any], int, int]:
    """The items of one page, the clamped page number, and the page count."""
    pages = max(1, -(-len(items) // per_page))
    page_no = min(page_no, pages)
    return items[(page_no - 1) * per_page : page_no * per_page], page_no, pages


def post_button(action: str, label: str, **fields: str) -> str:
    """A one-button POST form carrying hidden fields (add to cart, save, star...)."""
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    return f'<form method="post" action="{esc(action)}">{hidden}<button type="submit">{esc(label)}</button></form>'


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


def search_form(action: str, label: str, query: str, placeholder: str) -> str:
    return (
        f'<form role="search" action="{esc(action)}" method="get">'
        f'<input type="search" name="q" aria-label="{esc(label)}" placeholder="{esc(placeholder)}" value="{esc(query)}">'
        f'<button type="submit">Search</button></form>'
    )


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
