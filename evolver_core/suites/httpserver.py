"""A quiet threaded HTTP server on 127.0.0.1 (port 0 = a free port), for suites that serve pages."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietStaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class LocalHTTPServer:
    """Serve `handler_class` on 127.0.0.1 in a daemon thread; `url` is the base URL."""

    def __init__(self, handler_class: Any, port: int = 0):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler_class)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def netloc(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}/"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @classmethod
    def static(cls, directory: str, port: int = 0) -> "LocalHTTPServer":
        return cls(functools.partial(QuietStaticHandler, directory=directory), port)
