"""Storage: layout, atomic shard commits, and round trips on file:// and on a local S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from evolver_core.data import storage as storage_module
from evolver_core.contracts.episode import trajectory_id
from evolver_core.data.records import StepRecord, TrajectoryRecord, from_table, to_table
from evolver_core.data.storage import (DamagedFolder, Storage, StorageURIError, check_root, relative_path,
                                       shard_filename)
from s3_server import LocalS3Server
from helpers import make_step, make_trajectory

REPO = Path(__file__).resolve().parents[1]


class Backend(NamedTuple):
    root: str
    storage: Storage
    options: dict | None  # pandas storage_options


@pytest.fixture(scope="module")
def s3_server() -> Iterator[LocalS3Server]:
    with LocalS3Server() as server:
        yield server


@pytest.fixture(params=["file", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    if request.param == "file":
        root = f"file://{tmp_path}/store"
        return Backend(root, Storage(root), None)
    server: LocalS3Server = request.getfixturevalue("s3_server")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    root = f"{server.create_bucket(f'test-{uuid.uuid4().hex[:12]}')}/store"
    return Backend(root, Storage(root), server.storage_options)


Episode = tuple[list[StepRecord], list[TrajectoryRecord]]


def episode(round: int, stage: str, task_id: str, sample: int, n_steps: int) -> Episode:
    """One trajectory of run "run-a": its step rows and its trajectory row."""
    ids = dict(run_id="run-a", round=round, stage=stage, task_id=task_id, sample=sample)
    ids["trajectory_id"] = trajectory_id(task_id, sample)
    steps = [make_step(step=i, **ids) for i in range(n_steps)]
    return steps, [make_trajectory(n_steps=n_steps, **ids)]


def write_episode(
    st: Storage, round: int, stage: str, task_id: str, sample: int, n_steps: int = 2
) -> Episode:
    """Write one episode of run "run-a", keyed by its trajectory id, as real stages do."""
    steps, trajectories = episode(round, stage, task_id, sample, n_steps)
    key = trajectory_id(task_id, sample)
    st.write_shard("run-a", round, stage, "steps", to_table(steps), key)
    st.write_shard("run-a", round, stage, "trajectories", to_table(trajectories), key)
    return steps, trajectories


def sort_key(r: StepRecord | TrajectoryRecord) -> tuple:
    return (r.round, r.stage, r.trajectory_id, getattr(r, "step", 0))


def test_round_trip_and_listing(backend: Backend) -> None:
    st = backend.storage
    written: dict[tuple[int, str], tuple[list, list]] = {}
    for round in (0, 1):
        for stage in ("sample", "synthesize"):
            s0, t0 = write_episode(st, round, stage, "login-user", 0)
            s1, t1 = write_episode(st, round, stage, "click-button", 3, n_steps=1)
            written[round, stage] = (s0 + s1, t0 + t1)
    st.write_shard("run-b", 0, "sample", "steps", to_table([make_step(run_id="run-b")]), "k")

    assert st.list_runs() == ["run-a", "run-b"]
    assert sorted(from_table(st.read_table("run-a", table_name="steps")), key=sort_key) == sorted(
        (r for v in written.values() for r in v[0]), key=sort_key
    )
    one = st.read_table("run-a", 1, "synthesize", table_name="trajectories")
    expected = written[1, "synthesize"][1]
    assert sorted(from_table(one), key=sort_key) == sorted(expected, key=sort_key)
    by_stage = st.read_table("run-a", stage="sample", table_name="steps")
    assert set(by_stage.column("round").to_pylist()) == {0, 1}
    assert set(by_stage.column("stage").to_pylist()) == {"sample"}
    filtered = st.dataset("run-a", table_name="steps").to_table(filter=ds.field("round") == 1)
    assert set(filtered.column("round").to_pylist()) == {1} and filtered.num_rows == 6

    shards = st.list_shards("run-a", 0, "sample", "steps")
    assert shards == sorted(
        st.uri("run-a", 0, "sample", "steps", k) for k in ("login-user#0", "click-button#3")
    )
    assert len(st.list_shards("run-a")) == 16
    assert st.exists("run-a", 0, "sample", "steps", "login-user#0")
    assert not st.exists("run-a", 0, "sample", "steps", "login-user#9")
    assert st.exists("run-a", 1) and not st.exists("run-a", 2)
    assert st.read_table("run-z", table_name="steps").num_rows == 0


def test_other_readers_pandas_and_pyarrow_dataset(backend: Backend) -> None:
    st = backend.storage
    steps, _ = write_episode(st, 0, "sample", "login-user", 0, n_steps=3)
    steps_dir = st.uri("run-a", 0, "sample", "steps")
    frame = pd.read_parquet(steps_dir, storage_options=backend.options)
    assert frame["step"].tolist() == [0, 1, 2]
    assert str(frame["started_at"].dtype) == "datetime64[us, UTC]"
    dataset = ds.dataset(st.path("run-a", 0, "sample", "steps"), filesystem=st.fs, format="parquet")
    assert from_table(dataset.to_table()) == steps


def test_rewriting_a_shard_key_replaces_it(backend: Backend) -> None:
    st = backend.storage
    write_episode(st, 0, "sample", "login-user", 0, n_steps=3)
    steps, _ = write_episode(st, 0, "sample", "login-user", 0, n_steps=2)
    assert from_table(st.read_table("run-a", table_name="steps")) == steps
    assert len(st.list_shards("run-a", table_name="steps")) == 1


def test_leftover_temp_files_are_ignored(backend: Backend) -> None:
    st = backend.storage
    steps, _ = write_episode(st, 0, "sample", "login-user", 0)
    directory = st.path("run-a", 0, "sample", "steps")
    leftover = f"{directory}/.tmp-{shard_filename('other')}.{uuid.uuid4().hex}"
    st.fs.pipe(leftover, b"half a parquet file")
    assert from_table(st.read_table("run-a", table_name="steps")) == steps
    assert len(st.list_shards("run-a", table_name="steps")) == 1
    frame = pd.read_parquet(st.uri("run-a", 0, "sample", "steps"), storage_options=backend.options)
    assert len(frame) == len(steps)


def test_failed_write_leaves_previous_shard_and_no_temp(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = backend.storage
    old, _ = write_episode(st, 0, "sample", "login-user", 0, n_steps=3)
    real_write = pq.write_table

    def write_then_crash(table: pa.Table, where, **kwargs) -> None:
        real_write(table, where, **kwargs)
        raise RuntimeError("crash after writing the temporary file")

    monkeypatch.setattr(storage_module.pq, "write_table", write_then_crash)
    new, _ = episode(0, "sample", "login-user", 0, n_steps=1)
    with pytest.raises(RuntimeError, match="crash"):
        st.write_shard("run-a", 0, "sample", "steps", to_table(new), "login-user#0")
    assert from_table(st.read_table("run-a", table_name="steps")) == old
    listed = st.fs.ls(st.path("run-a", 0, "sample", "steps"), detail=False)
    names = [p.rsplit("/", 1)[-1] for p in listed]
    assert names == [shard_filename("login-user#0")]


KILLED_WRITER = """
import sys, time
import pyarrow.parquet as pq
from evolver_core.data.storage import Storage

root, source = sys.argv[1:]
table = pq.read_table(source)
real_write = pq.write_table

def write_and_stall(table, where, **kwargs):
    real_write(table, where, **kwargs)
    print("writing", flush=True)
    time.sleep(60)

pq.write_table = write_and_stall
Storage(root).write_shard("run-a", 0, "sample", "steps", table, "login-user#0")
"""


def test_writer_killed_mid_write_leaves_previous_shard(backend: Backend, tmp_path: Path) -> None:
    st = backend.storage
    old, _ = write_episode(st, 0, "sample", "login-user", 0, n_steps=3)
    new, _ = episode(0, "sample", "login-user", 0, n_steps=1)
    source = tmp_path / "new.parquet"
    pq.write_table(to_table(new), source)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, backend.root, str(source)],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line == "writing\n", proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.communicate()
    assert from_table(st.read_table("run-a", table_name="steps")) == old
    shard = st.uri("run-a", 0, "sample", "steps", "login-user#0")
    assert st.list_shards("run-a", table_name="steps") == [shard]


def test_write_shard_rejects_misfiled_or_malformed_tables(tmp_path: Path) -> None:
    st = Storage(str(tmp_path))
    steps, trajectories = episode(0, "sample", "login-user", 0, n_steps=2)
    with pytest.raises(ValueError, match="run_id"):
        st.write_shard("run-b", 0, "sample", "steps", to_table(steps), "k")
    with pytest.raises(ValueError, match="round"):
        st.write_shard("run-a", 1, "sample", "steps", to_table(steps), "k")
    with pytest.raises(ValueError, match="schema"):
        st.write_shard("run-a", 0, "sample", "steps", to_table(trajectories), "k")
    assert st.list_runs() == []


def test_paths_and_shard_names(tmp_path: Path) -> None:
    assert relative_path() == "runs"
    assert relative_path("r1", 2, "eval", "trajectories", "task-7.s1") == (
        "runs/r1/round=2/eval/trajectories/part-task-7.s1.parquet"
    )
    hashed = shard_filename("login-user#0")
    assert hashed.startswith("part-login-user_0-") and hashed == shard_filename("login-user#0")
    assert hashed != shard_filename("login-user_0") != shard_filename("login-user/0")
    for bad in (dict(run_id="r1", stage="x"), dict(run_id="a/b"), dict(run_id="..")):
        with pytest.raises(ValueError):
            relative_path(**bad)
    with pytest.raises(ValueError):
        relative_path("r1", 0, "sample", "logs")
    assert Storage(str(tmp_path)).uri("r1", 0) == f"file://{tmp_path}/runs/r1/round=0"


def test_credentials_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRETKEYVALUE")
    st = Storage("s3://bucket/prefix", endpoint_url="http://user:pa55word@127.0.0.1:9000")
    for text in (repr(st), str(st)):
        assert "127.0.0.1:9000" in text
        for secret in ("AKIDSECRETID", "SECRETKEYVALUE", "pa55word", "user"):
            assert secret not in text


def test_endpoint_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-env:1")
    assert "aws-env:1" in repr(Storage("s3://bucket"))
    monkeypatch.setenv("WEBEVOLVER_S3_ENDPOINT", "http://ours:2")
    assert "ours:2" in repr(Storage("s3://bucket"))
    assert "arg:3" in repr(Storage("s3://bucket", endpoint_url="http://arg:3"))
    with pytest.raises(ValueError, match="S3"):
        Storage(str(tmp_path), endpoint_url="http://arg:3")


# ---- roots and committed folders (issue 22) ----------------------------------------------


@pytest.mark.parametrize("root, says", [
    ("s3:/bucket/x", "two slashes"),
    ("s3:bucket/x", "two slashes"),
    ("gs://bucket/x", "unknown scheme 'gs'"),
    ("s3://Bad_Bucket/x", "not an S3 bucket name"),
    ("file://relative/x", "absolute path"),
])
def test_malformed_roots_are_refused(root: str, says: str) -> None:
    with pytest.raises(StorageURIError, match=says):
        Storage(root)


def test_well_formed_roots_are_taken(tmp_path: Path) -> None:
    for root in (str(tmp_path), f"file://{tmp_path}", "relative/folder", "s3://my-bucket/prefix", "memory://x"):
        assert check_root(root) == root


def adapter_folder(tmp_path: Path, fill: str, size: int = 4096) -> Path:
    folder = tmp_path / f"adapter-{fill}"
    (folder / "nested").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(fill.encode() * size)
    (folder / "nested" / "config.json").write_text(f'{{"fill": "{fill}"}}')
    return folder


def test_put_dir_commits_whole_folders(backend: Backend, tmp_path: Path) -> None:
    st = backend.storage
    uri = st.put_dir(adapter_folder(tmp_path, "a"), "run-a", 0, "finetune", "adapter")
    assert st.committed(uri)
    local = st.local_dir(uri, tmp_path / "cache")
    assert (local / "adapter_model.safetensors").read_bytes() == b"a" * 4096
    uri = st.put_dir(adapter_folder(tmp_path, "b", 100), "run-a", 0, "finetune", "adapter")  # replaced
    local = st.local_dir(uri, tmp_path / "cache")
    assert (local / "adapter_model.safetensors").read_bytes() == b"b" * 100
    assert (local / "nested" / "config.json").read_text() == '{"fill": "b"}'
    leftovers = [p for p in st.fs.ls(st.path("run-a", 0, "finetune")) if ".tmp-" in p]
    assert leftovers == []


def test_damaged_or_uncommitted_folders_are_not_trusted(backend: Backend, tmp_path: Path) -> None:
    st = backend.storage
    uri = st.put_dir(adapter_folder(tmp_path, "a"), "run-a", 0, "finetune", "adapter")
    path = st.fs._strip_protocol(uri)
    weights = next(p for p in st.fs.find(path) if p.endswith("adapter_model.safetensors"))
    st.fs.pipe_file(weights, b"a" * 10)  # truncated, as a full disk or a killed copy leaves it
    assert not st.committed(uri)
    with pytest.raises(DamagedFolder, match=r"adapter is damaged: adapter_model.safetensors has 10 bytes, "
                                            r"committed 4096"):
        st.local_dir(uri, tmp_path / "cache")
    st.fs.makedirs(f"{st.path('run-a', 0, 'finetune_wm')}/adapter", exist_ok=True)
    st.fs.pipe_file(f"{st.path('run-a', 0, 'finetune_wm')}/adapter/adapter_model.safetensors", b"x")  # no record
    assert not st.committed(st.uri("run-a", 0, "finetune_wm") + "/adapter")
    assert not st.committed(st.uri("run-a", 0, "nothing") + "/adapter")


def test_a_reader_never_sees_no_adapter_or_half_of_one(tmp_path: Path) -> None:
    st = Storage(str(tmp_path / "store"))
    folders = [adapter_folder(tmp_path, fill, 1 << 16) for fill in "ab"]
    uri = st.put_dir(folders[0], "run-a", 0, "finetune", "adapter")
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                st.check_committed(uri)
                seen.append("whole")
            except (DamagedFolder, FileNotFoundError) as exc:
                seen.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(30):
        st.put_dir(folders[i % 2], "run-a", 0, "finetune", "adapter")
    stop.set()
    reader.join()
    assert len(seen) > 30 and set(seen) == {"whole"}, [s for s in seen if s != "whole"][:3]


def test_a_failed_run_leaves_no_stage_folder_with_only_its_manifest(backend: Backend) -> None:
    from evolver_core.data.identity import StageIdentity
    from evolver_core.data.run_layout import discard_unstarted_stages, open_stage, read_identity

    store = backend.storage
    for stage in ("sample", "eval"):
        open_stage(store, "run-a", 0, stage, StageIdentity(stage=stage, code="c", params={}))
    write_episode(store, 0, "sample", "login-user", 0)
    removed = discard_unstarted_stages(store, "run-a")
    assert [p.rsplit("/", 1)[-1] for p in removed] == ["eval"]
    assert read_identity(store, "run-a", 0, "eval") is None and read_identity(store, "run-a", 0, "sample")
    assert discard_unstarted_stages(store, "run-a") == []
