"""A flow's hold on its run (`evolver_core.data.lock`), naming the flow run that holds it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional
from uuid import UUID

from prefect import get_client
from prefect.runtime import flow_run
from prefect.states import Crashed

from evolver_core.data.lock import Holder, RunLock, hold_run
from evolver_core.data.run_layout import discard_unstarted_stages
from evolver_core.data.storage import Storage
from evolver_core.settings import storage_root


@contextmanager
def holding_run(run_id: str, storage: Optional[str]) -> Iterator[RunLock]:
    """Hold `run_id` in its storage for the block (`RunLocked` at once if a live process has
    it). A dead holder's flow run, still `Running` on this server, is marked `Crashed`. A
    block that fails leaves no stage folder that holds only its manifest."""
    store = Storage(storage_root(storage))
    with hold_run(store, run_id, flow_run_id=flow_run.id) as lock:
        if lock.took_over is not None and lock.took_over.flow_run_id:
            crash_dead_flow_run(lock.took_over)
        try:
            yield lock
        except BaseException:
            discard_unstarted_stages(store, run_id)
            raise


def crash_dead_flow_run(holder: Holder) -> None:
    """Mark the flow run of a holder whose process is gone `Crashed`, unless it already ended."""
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(holder.flow_run_id))
        except Exception:  # noqa: BLE001 - another server's run, or no longer stored: nothing to mark
            return
        if run.state is not None and not run.state.is_final():
            client.set_flow_run_state(run.id, Crashed(message=f"its process ({holder.describe()}) is gone; "
                                                              "the run was taken over"), force=True)
