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
from dataclasses import dataclass

from evolver_core.data.identity import StageIdentity
from evolver_core.data.storage import Storage

log = logging.getLogger(__name__)

# Stages of a round, in the order they run (DESIGN.md "The loop").
SAMPLE = "sample"  # real trajectories: scripted demonstrations (round 0) or the previous WebEvolver policy
JUDGE = "judge"  # r̂'s verdicts on `sample` (judged copies of its trajectory rows)
SFT = "sft"  # rejection-sampled real trajectories as chat examples
WM_DATA = "wm_data"  # world-model transitions with distilled rationales
WM_SFT = "wm_sft"  # ... as the world model's chat examples
FINETUNE_WM = "finetune_wm"  # the world model M_w (LoRA), on wm_sft of rounds 0..i
SYNTHESIZE = "synthesize"  # synthetic trajectories: the policy acting on M_w's pages
SYNTH_SFT = "synth_sft"  # r̂-kept synthetic trajectories as chat examples
FINETUNE = "finetune"  # the round's WebEvolver policy M_i: sft + synth_sft of rounds 0..i
SAMPLE_SELF = "sample-self"  # the self-improve arm's real trajectories (round >= 2): its previous policy
SFT_SELF = "sft-self"  # ... rejection-sampled as chat examples (its judge: `judge_stage_for(SAMPLE_SELF)`)
FINETUNE_SELF = "finetune_self"  # the self-improve arm (round >= 1): its own real examples of rounds 0..i
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


def training_data(round_: int, stages: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    """(round, stage) of the example stages `stages` in every round a training reads."""
    return tuple((r, s) for r in training_rounds(round_) for s in stages)


@dataclass(frozen=True)
class PolicyArm:
    """A policy arm and its own chain of stages across rounds: round i samples the train tasks
    with the arm's policy of round i-1 (its `finetune` stage) into `sample`, keeps `sft`, trains
    `finetune` on its examples of rounds 0..i and is evaluated in `eval`. Rounds before
    `SHARED_ROUNDS` are shared: round 0's demonstrations, and round 1's `sample`, which both
    arms would draw from the same round-0 policy (sampled once, in the WebEvolver arm's stages)."""

    name: str  # its key in the round summary
    title: str  # as a person reads it
    sample: str
    sft: str
    finetune: str
    eval: str
    synthetic: bool  # also trains on the synthetic examples (`synth_sft`)

    def sample_stage(self, round_: int) -> str:
        """Where the real trajectories this arm learns from in round `round_` are."""
        return self.sample if round_ >= SHARED_ROUNDS else SAMPLE

    def sft_stage(self, round_: int) -> str:
        return self.sft if round_ >= SHARED_ROUNDS else SFT

    def training_data(self, round_: int) -> tuple[tuple[int, str], ...]:
        """(round, stage) of the examples its policy of round `round_` trains on: its real ones
        of rounds 0..i, and the synthetic ones where it has them."""
        return tuple((r, s) for r in training_rounds(round_)
                     for s in ((self.sft_stage(r), SYNTH_SFT) if self.synthetic else (self.sft_stage(r),)))


SHARED_ROUNDS = 2  # rounds whose real data both arms share (PolicyArm)
WEBEVOLVER = PolicyArm("webevolver", "WebEvolver", SAMPLE, SFT, FINETUNE, EVAL, synthetic=True)
SELF_IMPROVE = PolicyArm("self_improve", "self-improve", SAMPLE_SELF, SFT_SELF, FINETUNE_SELF, EVAL_SELF,
                         synthetic=False)
ARMS = {arm.name: arm for arm in (WEBEVOLVER, SELF_IMPROVE)}


def sft_stage_for(source_stage: str) -> str:
    """Where a stage's rejection-sampled examples go: `synth_sft` for synthetic trajectories,
    `sft-self` for the self-improve arm's own, `sft` for the rest (a policy arm trains on real
    data alone, the WebEvolver policy on both)."""
    return {SYNTHESIZE: SYNTH_SFT, SAMPLE_SELF: SFT_SELF}.get(source_stage, SFT)


def adapter_uri(store: Storage, run_id: str, round_: int, stage: str = FINETUNE) -> str:
    return store.uri(run_id, round_, stage).rstrip("/") + f"/{ADAPTER}"


def has_adapter(store: Storage, run_id: str, round_: int, stage: str = FINETUNE) -> bool:
    """Whether the stage's adapter is committed whole (`Storage.put_dir`); a half-written or
    damaged one does not count."""
    return store.committed(adapter_uri(store, run_id, round_, stage))


def previous_adapter(store: Storage, run_id: str, round_: int, stage: str = FINETUNE) -> str:
    """The policy of round i-1 (of the arm whose finetune stage is `stage`), as stored."""
    if not has_adapter(store, run_id, round_ - 1, stage):
        raise FileNotFoundError(f"round {round_} samples with round {round_ - 1}'s policy, but "
                                f"{adapter_uri(store, run_id, round_ - 1, stage)} holds no committed adapter: "
                                f"run round {round_ - 1} of run {run_id!r} first")
    return adapter_uri(store, run_id, round_ - 1, stage)


def next_round(store: Storage, run_id: str) -> int:
    """The first round of `run_id` without its trained policies: what a nightly schedule runs
    next. A round is trained when its WebEvolver policy is, and its self-improve policy too
    where that stage started (the next round's self-improve arm samples with it)."""
    i = 0
    while has_adapter(store, run_id, i) and (read_identity(store, run_id, i, FINETUNE_SELF) is None
                                             or has_adapter(store, run_id, i, FINETUNE_SELF)):
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
