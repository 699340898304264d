"""The allowlist a task carries (`Task.allowed_hosts`), and its matchers.

Entries are host names, or `host:port` (the offline suites run on 127.0.0.1 with one port per
site; a local address always names its port, since every port there is another server). An
entry with a leading `*.` matches any subdomain of the rest (`*.allrecipes.com` matches
`www.allrecipes.com`, not `allrecipes.com`, which is listed on its own). The single entry `*`
allows every host: open-web tasks that start on a search engine. Only http(s) URLs are ever
allowed (never file://, chrome://, javascript:...); `about:blank` is allowed as the empty page.

The browser applies the list to every request a page makes (`request_allowed`), not only to
navigations: see DESIGN.md, "The browser and the suites".
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# Inline content that no server is asked for: fine inside a page, never as a page of its own.
INLINE_SCHEMES = ("data", "blob")
EMPTY_PAGES = ("about:blank", "about:srcdoc")


def host_allowed(host: str, allowlist: Iterable[str], *, netloc: str | None = None) -> bool:
    """Whether `host` (or its `host:port` netloc) may be visited under `allowlist`."""
    host = host.lower().rstrip(".")
    netloc = (netloc or host).lower()
    for entry in allowlist:
        entry = entry.lower()
        if entry == "*" or entry in (host, netloc) or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def host_port(parts: SplitResult) -> str:
    """`host:port` of an http(s) URL with the scheme's default port made explicit, so that
    `127.0.0.1:80` matches `http://127.0.0.1/`. Raises ValueError on a malformed port."""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or DEFAULT_PORTS[parts.scheme]}"


def url_allowed(url: str, allowlist: Iterable[str]) -> bool:
    """Whether a page may be shown at `url` (a navigation of any frame, a new tab)."""
    if url == "about:blank":
        return True
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    try:
        netloc = host_port(parts)
    except ValueError:
        return False
    return host_allowed(parts.hostname, allowlist, netloc=netloc)


def request_allowed(url: str, allowlist: Iterable[str], *, document: bool) -> bool:
    """Whether a page may make this request: a `document` (a page for a frame or tab) as
    `url_allowed`; a subresource (script, style, image, fetch/XHR, ...) by the same hosts, or
    inline (`data:`, `blob:`) content."""
    if url in EMPTY_PAGES or (not document and urlsplit(url).scheme in INLINE_SCHEMES):
        return True
    return url_allowed(url, allowlist)
