"""Child service processes (model servers, the Prefect server, PostgreSQL): free ports,
health polling, starting with cleanup on failure, and stopping a whole process group.

Every service runs in its own process group (`start_new_session=True`), so stopping the
group also stops whatever the service spawned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx


class ServerError(RuntimeError):
    """A service failed to start, died, or refused a management request."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone


def get_json(url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 2.0) -> Any:
    response = httpx.get(url, headers=headers, timeout=timeout_s)
    response.raise_for_status()
    return response.json()


def wait_healthy(url: str, deadline_s: float, *, headers: dict[str, str] | None = None,
                 check_alive: Callable[[], None] = lambda: None) -> None:
    """Poll `url` until it answers 200; `check_alive` raises if the server died meanwhile."""
    deadline = time.monotonic() + deadline_s
    while True:
        check_alive()
        try:
            get_json(url, headers=headers)
            return
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code < 500:  # up, but refusing us (e.g. a wrong API key): final
                raise ServerError(f"{url} answered HTTP {exc.response.status_code}") from None
            error: Exception = exc
        except (httpx.HTTPError, ValueError) as exc:
            error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {deadline_s:.0f} s ({error})")
        time.sleep(0.25)


def await_health(url: str, timeout_s: float, *, check_alive: Callable[[], None], stop: Callable[[], None],
                 on_timeout: Callable[[str], Exception]) -> None:
    """Wait for a just-started service; on any failure `stop` it, so nothing is left running.
    A timeout becomes `on_timeout(reason)` (an error that can carry the service's log tail)."""
    try:
        wait_healthy(url, timeout_s, check_alive=check_alive)
    except TimeoutError as exc:
        stop()
        raise on_timeout(str(exc)) from None
    except BaseException:
        stop()
        raise


def stop_group(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM to the process group, SIGKILL after `timeout_s`, then reap the leader."""
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass
    signal_group(process.pid, signal.SIGKILL)  # a leader that ignored SIGTERM, children that outlived it
    process.wait()
