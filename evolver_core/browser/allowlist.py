"""The navigation allowlist a task carries (`Task.allowed_hosts`), and its one matcher.

Entries are host names, or `host:port` for local servers (the offline suites run on
127.0.0.1 with one port per site). An entry with a leading `*.` matches any subdomain of the
rest (`*.allrecipes.com` matches `www.allrecipes.com`, not `allrecipes.com`, which is listed
on its own). The single entry `*` allows every host: open-web tasks that start on a search
engine. Only http(s) URLs are ever allowed (never file://, chrome://, data:...);
`about:blank` is allowed as the empty page.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit


def host_allowed(host: str, allowlist: Iterable[str], *, netloc: str | None = None) -> bool:
    """Whether `host` (or its `host:port` netloc) may be visited under `allowlist`."""
    host = host.lower().rstrip(".")
    netloc = (netloc or host).lower()
    for entry in allowlist:
        entry = entry.lower()
        if entry == "*" or entry in (host, netloc) or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def url_allowed(url: str, allowlist: Iterable[str]) -> bool:
    if url == "about:blank":
        return True
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return host_allowed(parts.hostname, allowlist, netloc=parts.netloc)
