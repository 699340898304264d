"""Child service processes (model servers, the Prefect server, PostgreSQL): free ports,
health polling, starting with cleanup on failure, and stopping a whole process group.

Every service runs in its own process group (`start_new_session=True`), so stopping the
group also stops whatever the service spawned. Services started by `start_service` also die
with this process however it dies (SIGKILL included: the kernel sends them SIGTERM, the
parent-death signal, Linux only), get only the environment they need (`service_env`: no API
keys, tokens or passwords), and carry a marker (`SERVICE_OWNER_ENV`) by which
`stray_services` finds those whose owner is gone (`webevolver doctor`).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from evolver_core.contracts.errors import WebEvolverError

SERVICE_OWNER_ENV = "WEBEVOLVER_SERVICE_OWNER"  # "<pid>:<start time>" of the process that started it
# What a local service may see of our environment: the basics, offline and threading settings
# of the ML libraries, GPU selection, and our own non-secret settings.
_ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
                        "TMP", "TEMP", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "XDG_CACHE_HOME",
                        "CUDA_VISIBLE_DEVICES", "SSL_CERT_FILE"})
_ENV_PREFIXES = ("LC_", "HF_", "TRANSFORMERS_", "OMP_", "MKL_", "TORCH", "PYTORCH_", "CUDA_", "NCCL_", "NVIDIA_",
                 "TRITON_", "VLLM_", "WEBEVOLVER_")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")
# Loaded here, in the parent: between fork and exec the child must not load libraries.
_LIBC = ctypes.CDLL(None, use_errno=True) if _LINUX else None
_spawner: tuple[int, ThreadPoolExecutor] | None = None  # (pid it belongs to, executor)


class ServerError(WebEvolverError, RuntimeError):
    """A service failed to start, died, or refused a management request."""


@dataclass(frozen=True)
class Stray:
    """A service whose owner is gone."""

    pid: int
    pgid: int
    command: str


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a local service: ours, filtered to what it needs (never an API key,
    AWS credential, token, secret or password), plus `extra`."""
    env = {name: value for name, value in os.environ.items() if _passes(name)}
    return env | dict(extra or {})


def _passes(name: str) -> bool:
    if name.startswith("AWS_") or _SECRET_NAME.search(name):
        return False
    return name in _ENV_NAMES or name.startswith(_ENV_PREFIXES)


def start_service(command: list[str], *, log: IO[bytes], env: Mapping[str, str]) -> subprocess.Popen:
    """Start `command` in its own process group, logging to `log`, with `env` (build it with
    `service_env`) and the owner marker; it gets SIGTERM when this process dies."""
    owner = os.getpid()
    env = {**env, SERVICE_OWNER_ENV: f"{owner}:{process_start(owner)}"}
    spawn = _spawner_thread().submit(subprocess.Popen, command, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=_die_with(owner) if _LINUX else None)
    return spawn.result()


def _spawner_thread() -> ThreadPoolExecutor:
    """The one thread services are forked from. PR_SET_PDEATHSIG fires when the THREAD that
    forked the child ends, not the process, and a stage's worker thread may end while its
    server is still wanted; this thread lives as long as the process. (Made again in a forked
    child, which has no threads.)"""
    global _spawner
    if _spawner is None or _spawner[0] != os.getpid():
        _spawner = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="service-spawner"))
    return _spawner[1]


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child, between fork and exec
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    return preexec


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name); None for no process or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields


def process_start(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, stat field 22): with the pid, it names one
    process, even after the pid is reused. None when there is no such (live) process."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _marked() -> Iterator[tuple[int, str]]:
    """(pid, owner marker) of every live process that carries the marker, except this one."""
    mark = f"{SERVICE_OWNER_ENV}=".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or _stat(int(entry.name)) is None:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(mark):
                yield int(entry.name), item[len(mark):].decode(errors="replace")


def stray_services() -> list[Stray]:
    """Services (and whatever they spawned) started by a webevolver process that is gone."""
    strays = []
    for pid, owner in _marked():
        owner_pid, _, started = owner.partition(":")
        if not owner_pid.isdigit() or process_start(int(owner_pid)) == started:
            continue  # the owner still runs
        try:
            pgid = os.getpgid(pid)
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        strays.append(Stray(pid, pgid, command))
    return strays


def stop_strays(strays: list[Stray], timeout_s: float = 5.0) -> None:
    """SIGTERM to each stray's process group, SIGKILL to what is left after `timeout_s`."""
    groups = {s.pgid for s in strays} - {os.getpgid(0)}
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(process_start(s.pid) for s in strays):
        time.sleep(0.1)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)


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
