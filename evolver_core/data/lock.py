"""The run lock: one live process works on a run id at a time.

Why: two `evolve`s on one run id (a nightly schedule firing during a manual run, two
terminals) both did all the work, and one moved the other's stages aside while it was still
writing them. So a run is held by a lock object in its own storage, ``runs/<run>/LOCK``: a
JSON record of the holder (host, pid and the pid's start time, flow run id, since when, last
heartbeat, a random token).

Decided: a lock object in storage, not a Prefect global concurrency limit. It holds wherever
the data is: without a Prefect server (a notebook calling the stages), across two Prefect
servers writing to one bucket, and it names its holder; a concurrency limit counts slots on
one server only and keeps a dead process's slot until it times out.

- Taking it: an exclusive create (`Storage.create_file`: a hard link locally, a conditional
  ``If-None-Match: *`` PUT on S3). A refusal raises `RunLocked`, naming the holder.
- Holding it: a daemon thread rewrites the heartbeat every `HEARTBEAT_S`.
- A dead holder is taken over, and the taker says so (`RunLock.took_over`, a log line): on
  the same host when its pid is gone or now belongs to another process (another start time);
  from another host when its heartbeat is older than `STALE_S`. Of two processes taking over
  the same dead holder, the one that creates ``LOCK.takeover-<its token>`` first wins.
- Nested holds in one process share it (`evolve` holds the run, its `evolve_round`s join).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Optional

from evolver_core.contracts.errors import WebEvolverError
from evolver_core.data.storage import Storage
from evolver_core.pids import pid_alive, start_ticks

log = logging.getLogger(__name__)

LOCK_FILE = "LOCK"
HEARTBEAT_S = 30.0  # how often a holder proves it lives
STALE_S = 300.0  # a holder on another host is dead after this long without a heartbeat
_TAKE_TRIES = 3  # create, else take over a dead holder, else look again (it may just have left)


@dataclass(frozen=True)
class Holder:
    """Who holds a run (the lock object's record)."""

    host: str
    pid: int
    pid_started: Optional[int]  # the pid's start time in clock ticks (/proc), to tell a reused pid
    flow_run_id: Optional[str]
    since: str  # ISO time the run was taken
    heartbeat: float  # epoch seconds of the last heartbeat
    token: str

    def describe(self) -> str:
        flow = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        beat = max(0, round(time.time() - self.heartbeat))
        return f"pid {self.pid} on host {self.host}{flow}, since {self.since} (last heartbeat {beat} s ago)"


class RunLocked(WebEvolverError, RuntimeError):
    """The run is held by another live process."""

    def __init__(self, run_id: str, holder: Holder, uri: str):
        super().__init__(f"run {run_id!r} is in use by {holder.describe()}; wait for it to end or stop it, "
                         f"then rerun (lock: {uri})")
        self.run_id, self.holder, self.uri = run_id, holder, uri


def dead_because(holder: Holder, stale_s: float = STALE_S) -> Optional[str]:
    """Why `holder` is dead, or None while it may live."""
    if holder.host == socket.gethostname():
        if not pid_alive(holder.pid):
            return f"its process {holder.pid} is gone"
        if holder.pid_started is not None and start_ticks(holder.pid) not in (None, holder.pid_started):
            return f"pid {holder.pid} now belongs to another process"
        return None
    silent = time.time() - holder.heartbeat
    return f"no heartbeat for {silent:.0f} s" if silent > stale_s else None


class RunLock:
    """The lock of one run, held from `acquire` to `release` (use `hold_run`)."""

    def __init__(self, store: Storage, run_id: str, *, flow_run_id: Optional[str] = None,
                 heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        self.store, self.run_id = store, run_id
        self.path = f"{store.path(run_id)}/{LOCK_FILE}"
        self.uri = store.fs.unstrip_protocol(self.path)
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.holder = Holder(host=socket.gethostname(), pid=os.getpid(), pid_started=start_ticks(os.getpid()),
                             flow_run_id=flow_run_id, since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             heartbeat=time.time(), token=uuid.uuid4().hex)
        self.took_over: Optional[Holder] = None  # the dead holder this lock replaced
        self.lost: Optional[Holder] = None  # who took it from us (our heartbeat was too late)
        self._stop = threading.Event()
        self._beater: Optional[threading.Thread] = None

    def read(self) -> Optional[Holder]:
        """The current holder; None when the run is free. An unreadable record is a dead holder."""
        data = self.store.read_file(self.path)
        if data is None:
            return None
        try:
            return Holder(**json.loads(data))
        except (ValueError, TypeError):
            return Holder(host="?", pid=0, pid_started=None, flow_run_id=None, since="?", heartbeat=0.0,
                          token=f"unreadable-{len(data)}")

    def _record(self) -> bytes:
        return json.dumps(asdict(self.holder), indent=1).encode()

    def acquire(self) -> RunLock:
        """Take the run, taking over a dead holder; `RunLocked` when a live one has it."""
        for _ in range(_TAKE_TRIES):
            if self.store.create_file(self.path, self._record()):
                break
            current = self.read()
            if current is None:
                continue  # released meanwhile
            why = dead_because(current, self.stale_s)
            if why is None:
                raise RunLocked(self.run_id, current, self.uri)
            if self.store.create_file(f"{self.path}.takeover-{current.token}", b"") and \
                    (self.read() or current).token == current.token:
                self.store.write_file(self.path, self._record())
                self.took_over = current
                log.warning("run %r: took over its lock from %s: %s", self.run_id, current.describe(), why)
                break
        else:
            raise RunLocked(self.run_id, self.read() or self.holder, self.uri)
        self._beater = threading.Thread(target=self._beat, name=f"run-lock-{self.run_id}", daemon=True)
        self._beater.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            current = self.read()
            if current is None or current.token != self.holder.token:
                self.lost = current
                log.error("run %r: lost its lock to %s", self.run_id, current.describe() if current else "nobody")
                return
            self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
            try:
                self.store.write_file(self.path, self._record())
            except OSError as exc:  # storage away for a moment: the next beat tries again
                log.warning("run %r: heartbeat not written: %s", self.run_id, exc)

    def name_flow_run(self, flow_run_id: str) -> None:
        """Record the flow run working under this hold: the command holds the run before its flow
        run exists (a refusal then costs no Prefect round trip), and a taker of a dead holder
        marks that flow run `Crashed`."""
        self.holder = Holder(**{**asdict(self.holder), "flow_run_id": flow_run_id})
        current = self.read()
        if current is not None and current.token == self.holder.token:
            self.store.write_file(self.path, self._record())

    def release(self) -> None:
        """Stop the heartbeat and remove the lock (unless another process has taken it)."""
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
        current = self.read()
        if current is not None and current.token == self.holder.token:
            self.store.remove(self.path)
        if self.took_over is not None:
            self.store.remove(f"{self.path}.takeover-{self.took_over.token}")


_held: dict[str, list] = {}  # lock URI -> [RunLock, depth]: the runs this process holds
_held_guard = threading.Lock()


@contextmanager
def hold_run(store: Storage, run_id: str, *, flow_run_id: Optional[str] = None,
             heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> Iterator[RunLock]:
    """Hold run `run_id` of `store` for the block (`RunLocked` if a live process has it);
    a process already holding it joins its hold (naming `flow_run_id` where the hold names none)."""
    lock = RunLock(store, run_id, flow_run_id=flow_run_id, heartbeat_s=heartbeat_s, stale_s=stale_s)
    with _held_guard:
        entry = _held.get(lock.uri)
        if entry is None:
            entry = _held[lock.uri] = [lock.acquire(), 0]
        elif flow_run_id and entry[0].holder.flow_run_id is None:
            entry[0].name_flow_run(flow_run_id)
        entry[1] += 1
    try:
        yield entry[0]
    finally:
        with _held_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[lock.uri]
                entry[0].release()
