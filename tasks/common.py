"""What every stage task shares: its cache policy, where results persist, storage access.

Cache policy `INPUTS + TASK_SOURCE`: a stage reruns when its inputs or its code change, and
not otherwise, across flow runs, so rerunning a finished round is all cache hits. Results
are small (URIs and counts; the data itself is Parquet/adapters in the storage root) and
persist under `<storage root>/prefect-results`, next to the data they describe.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.filesystems import RemoteFileSystem

from evolver_core.storage import Storage

STAGE_CACHE = INPUTS + TASK_SOURCE
RESULTS_DIR = "prefect-results"


def stage_task(**options: Any):
    """`@task` with the stage defaults (cache policy, persisted results)."""
    return task(cache_policy=STAGE_CACHE, persist_result=True, **options)


def results_storage(root: str) -> Path | RemoteFileSystem:
    """The Prefect result storage inside the storage root: a local folder, or (remote roots)
    a `RemoteFileSystem` block saved on the server under a name derived from the URI. The
    block holds the URI and endpoint only; keys come from the environment of the worker."""
    store = Storage(root)
    uri = store.uri().rstrip("/") + "/" + RESULTS_DIR
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    settings = {"client_kwargs": {"endpoint_url": store.endpoint_url}} if store.endpoint_url else {}
    block = RemoteFileSystem(basepath=uri, settings=settings)
    block.save("webevolver-results-" + hashlib.sha256(uri.encode()).hexdigest()[:12], overwrite=True)
    return block


def local_cache() -> str:
    return os.path.join(os.environ.get("WEBEVOLVER_HOME", os.path.expanduser("~/.cache/webevolver")), "downloads")
