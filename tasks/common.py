"""What every stage task shares: its cache policy, where results persist, storage access.

Cache policy: `INPUTS + TASK_SOURCE` plus the stage's identity (`evolver_core.data.identity`: the
digest of the domain code and prompts it runs, content digests of its models and adapters,
its parameters, and its upstream stages' identities). A stage reruns when any of those
change (an edited prompt, a retrained adapter at the same path, an upstream stage that
reran), and not otherwise, across flow runs, so rerunning a finished round is all cache
hits. Upstream stages reach the key only through the identity: the flows order a task after
them with Prefect's `wait_for=`, never by passing their results as inputs, because those
results change when a stage merely resumes (`new` 0, `skipped` N), which must not rerun what
follows (a resumed round once re-distilled every world-model rationale, RESULTS.md R7). The inputs
that remain are the task's real parameters, so a change the identity leaves out on purpose
(the sampling concurrency) reruns that task, which resumes, and nothing after it.

Results are small (URIs, counts, the identity digest; the data itself is Parquet/adapters in
the storage root) and persist under `<storage root>/prefect-results`, next to the data they
describe.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.filesystems import RemoteFileSystem

from evolver_core.data.identity import StageIdentity
from evolver_core.data.storage import Storage

RESULTS_DIR = "prefect-results"


def stage_cache(identity: Callable[[Any], StageIdentity], repair: Callable[[Any], str] | None = None) -> CachePolicy:
    """The inputs, `TASK_SOURCE`, and the identity `identity(inputs)` describes (`inputs`: the
    task's one parameter, the stage's inputs record); plus `repair(inputs)` where given (a
    stage whose stored output went missing or was damaged must run again, not return its
    cached result)."""
    policy = INPUTS + TASK_SOURCE + CachePolicy.from_cache_key_fn(lambda ctx, params: identity(params["inputs"]).digest)
    return policy + CachePolicy.from_cache_key_fn(lambda ctx, params: repair(params["inputs"])) if repair else policy


def stage_task(identity: Callable[[Any], StageIdentity], repair: Callable[[Any], str] | None = None, **options: Any):
    """`@task` with the stage defaults (the identity-aware cache policy, persisted results) for
    a task whose one parameter is its stage's inputs record, named `inputs`."""
    return task(cache_policy=stage_cache(identity, repair), persist_result=True, **options)


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


def artifact_key(*parts: object) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return "-".join("".join(c if c.isalnum() else "-" for c in str(p).lower()) for p in parts)
