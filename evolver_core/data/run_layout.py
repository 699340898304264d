"""The run layout: every stage's name, where its data and adapters live, which rounds a
training reads, and each stage's identity manifest.

``<root>/runs/<run>/round=<i>/<stage>/`` holds a stage's tables (`storage.Storage`), its
adapter (``finetune*/adapter``, committed whole by `Storage.put_dir`) and ``identity.json``:
the `StageIdentity` that produced everything in the folder. `open_stage` is how a stage
starts writing: same identity, it resumes; another identity, the old folder is moved whole to
``<root>/superseded/<run>/round=<i>/<stage>-<old digest>-<n>/`` (kept for inspection, read by
nothing) and the stage starts empty. So a stage folder never mixes identities, and every
reader may take all of it.
"""

from __future__ import annotations

import json
import logging
import uuid

from evolver_core.data.identity import StageIdentity
from evolver_core.data.storage import Storage

log = logging.getLogger(__name__)

# Stages of a round, in the order they run (DESIGN.md "The loop").
SAMPLE = "sample"  # real trajectories: scripted demonstrations (round 0) or the previous policy
JUDGE = "judge"  # r̂'s verdicts on `sample` (judged copies of its trajectory rows)
SFT = "sft"  # rejection-sampled real trajectories as chat examples
WM_DATA = "wm_data"  # world-model transitions with distilled rationales
WM_SFT = "wm_sft"  # ... as the world model's chat examples
FINETUNE_WM = "finetune_wm"  # the world model M_w (LoRA), on wm_sft of rounds 0..i
SYNTHESIZE = "synthesize"  # synthetic trajectories: the policy acting on M_w's pages
SYNTH_SFT = "synth_sft"  # r̂-kept synthetic trajectories as chat examples
FINETUNE = "finetune"  # the round's WebEvolver policy M_i: sft + synth_sft of rounds 0..i
FINETUNE_SELF = "finetune_self"  # the self-improve arm (round >= 1): sft of rounds 0..i only
EVAL = "eval"  # M_i on the test split
EVAL_SELF = "eval-self"  # the self-improve arm on the same test tasks
EVAL_GEN = "eval-gen"  # M_i on tasks never trained on (generalization)
EVAL_PLAIN = "eval-plain"  # M_i decoding plainly on the look-ahead's own tasks (when they are not eval's)
FIDELITY = "fidelity"  # M_w's STR / Sim. / O/A on eval's real transitions
ADAPTER = "adapter"  # the adapter folder inside a finetune stage
MANIFEST = "identity.json"
SUPERSEDED = "superseded"


def lookahead_stage(depth: int) -> str:
    """`eval-wmla<d>`: the round's policy evaluated with world-model look-ahead of depth d."""
    return f"{EVAL}-wmla{depth}"


def repeat_stage(repeat: int) -> str:
    """`eval-<r>`: repeat r of a standalone evaluation (`flows.evaluate`)."""
    return f"{EVAL}-{repeat}"


def judge_stage_for(source_stage: str) -> str:
    """Where the verdicts on a stage's trajectories go: `judge` for `sample` (the round's
    judge), `<stage>-judge` for any other (e.g. `eval-0-judge` for an evaluation)."""
    return JUDGE if source_stage == SAMPLE else f"{source_stage}-{JUDGE}"


def judged_stage(stage: str) -> str | None:
    """The stage a judge stage rated (`judge_stage_for` inverted); None for other stages."""
    if stage == JUDGE:
        return SAMPLE
    return stage.removesuffix(f"-{JUDGE}") if stage.endswith(f"-{JUDGE}") else None


def training_rounds(round_: int) -> range:
    """The rounds whose examples a round's training reads: 0..i (the paper's union)."""
    return range(round_ + 1)


def policy_sft_stages(with_synthetic: bool = True) -> tuple[str, ...]:
    """The example stages a policy trains on: real, plus synthetic for the WebEvolver policy."""
    return (SFT, SYNTH_SFT) if with_synthetic else (SFT,)


def adapter_uri(store: Storage, run_id: str, round_: int, stage: str = FINETUNE) -> str:
    return store.uri(run_id, round_, stage).rstrip("/") + f"/{ADAPTER}"


def has_adapter(store: Storage, run_id: str, round_: int, stage: str = FINETUNE) -> bool:
    """Whether the stage's adapter is committed whole (`Storage.put_dir`); a half-written or
    damaged one does not count."""
    return store.committed(adapter_uri(store, run_id, round_, stage))


def previous_adapter(store: Storage, run_id: str, round_: int) -> str:
    """The policy of round i-1, as its finetune stage stored it."""
    if not has_adapter(store, run_id, round_ - 1):
        raise FileNotFoundError(f"round {round_} samples with round {round_ - 1}'s policy, but "
                                f"{adapter_uri(store, run_id, round_ - 1)} holds no committed adapter: "
                                f"run round {round_ - 1} of run {run_id!r} first")
    return adapter_uri(store, run_id, round_ - 1)


def next_round(store: Storage, run_id: str) -> int:
    """The first round of `run_id` without a trained policy: what a nightly schedule runs next."""
    i = 0
    while has_adapter(store, run_id, i):
        i += 1
    return i


# ---- identity manifests ---------------------------------------------------------------------

def _manifest_path(store: Storage, run_id: str, round_: int, stage: str) -> str:
    return f"{store.path(run_id, round_, stage)}/{MANIFEST}"


def read_identity(store: Storage, run_id: str, round_: int, stage: str) -> StageIdentity | None:
    """The identity that produced a stage's folder; None when it has none (not started, or
    written before identities existed)."""
    path = _manifest_path(store, run_id, round_, stage)
    if not store.fs.exists(path):
        return None
    return StageIdentity.from_json(json.loads(store.fs.cat_file(path)))


def discard_unstarted_stages(store: Storage, run_id: str) -> list[str]:
    """Remove the stage folders of `run_id` that hold their manifest and nothing else (a stage
    that failed before it stored anything: nothing to resume, and no sign of a result); returns
    their paths. Called when a run's hold ends in an error (`flows.holding`)."""
    removed = []
    for manifest in store.fs.glob(f"{store.path(run_id)}/round=*/*/{MANIFEST}"):
        folder = manifest.rsplit("/", 1)[0]
        if store.fs.find(folder) == [manifest]:
            store.fs.rm(folder, recursive=True)
            removed.append(folder)
    if removed:
        log.info("removed %d stage folder(s) of run %s that failed before storing anything: %s", len(removed),
                 run_id, ", ".join(removed))
    return removed


def stage_digest(store: Storage, run_id: str, round_: int, stage: str) -> str | None:
    """The identity digest of a stage as stored (what downstream identities name)."""
    found = read_identity(store, run_id, round_, stage)
    return found.digest if found else None


def open_stage(store: Storage, run_id: str, round_: int, stage: str, identity: StageIdentity) -> str:
    """Make the stage folder hold `identity`'s results only; returns "new", "resumed" or
    "superseded" (an older identity's folder was moved aside: logged with both digests)."""
    folder = store.path(run_id, round_, stage)
    found = read_identity(store, run_id, round_, stage)
    if found is not None and found.digest == identity.digest:
        return "resumed"
    outcome = "new"
    if store.fs.exists(folder):
        old = found.short if found else "unknown"
        target = (f"{store.path().rsplit('/', 1)[0]}/{SUPERSEDED}/{run_id}/round={round_}/"
                  f"{stage}-{old}-{uuid.uuid4().hex[:6]}")
        store.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        store.fs.mv(folder, target, recursive=True)
        log.warning("stage %s of round %d of run %s was produced by identity %s, not %s: moved to %s",
                    stage, round_, run_id, old, identity.short, store.fs.unstrip_protocol(target))
        outcome = "superseded"
    store.write_file(_manifest_path(store, run_id, round_, stage),
                     json.dumps(identity.to_json(), indent=1, sort_keys=True).encode())
    return outcome
