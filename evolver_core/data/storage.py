"""Record storage: Parquet shards under one fsspec root (local directory or S3 prefix).

Why: every stage of every round writes its records from many workers, and a killed or
retried worker must never leave half a shard or duplicate rows behind. So:

- Layout: ``<root>/runs/<run_id>/round=<i>/<stage>/<table>/part-<shard>.parquet``, with
  `table` one of `records.SCHEMAS` ("steps", "trajectories"). ``round=<i>`` is a hive
  partition; every row also carries run_id, round and stage, so a shard is
  self-describing.
- Step screenshots (optional, `sampling.SampleConfig.screenshots`) sit beside the shards:
  ``<stage>/screenshots/<trajectory>/<step>.png``, committed the same way (`write_file`).
- Shard names are deterministic from a caller-chosen shard key (e.g. the trajectory id):
  rewriting a key replaces the shard instead of adding rows.
- Atomic commit: a shard is written under a temporary name starting with "." in the same
  directory, then moved to its final name. On a local filesystem the move is a rename
  (atomic). On S3 the move is a server-side copy plus delete; a copied object, like any
  PUT, becomes visible whole or not at all, and an interrupted upload of the temporary
  object never reaches the final key. Either way a killed writer leaves the previous
  shard (or none) plus at most a stray temporary file, which every reader ignores
  (readers only match ``part-*.parquet``; pyarrow/pandas skip names starting with ".").

S3 settings: the endpoint comes from the `endpoint_url` argument, else
``WEBEVOLVER_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL``; credentials come only from the
standard AWS chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles, roles)
and are never passed, held or shown by this class.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import IO, Callable
from urllib.parse import urlsplit, urlunsplit

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.utils import get_protocol

from evolver_core.data.records import SCHEMAS, TableName, validate_table
from evolver_core.settings import settings
_S3_PROTOCOLS = ("s3", "s3a")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ROUND_PARTITIONING = ds.partitioning(pa.schema([("round", pa.int32())]), flavor="hive")


class UnreadableShard(OSError):
    """Stored shards that cannot be read (truncated by a full disk, a killed copy)."""

    def __init__(self, uris: list[str]):
        super().__init__(f"{len(uris)} unreadable shard(s), first: {uris[0]} (a rerun of the stage repairs them; "
                         f"`show` and `view` skip them)")
        self.uris = uris


def _check_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{kind} must match {_NAME.pattern}, got {value!r}")
    return value


def _check_table_name(value: str) -> TableName:
    if value not in SCHEMAS:
        raise ValueError(f"table_name must be one of {sorted(SCHEMAS)}, got {value!r}")
    return value  # type: ignore[return-value]


def safe_key(key: str) -> str:
    """`key` itself when it is safe in paths, else a slug of it suffixed with a hash of the key,
    so distinct keys never share a name and equal keys always do."""
    if _NAME.fullmatch(key):
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{_UNSAFE.sub('_', key)}-{digest}"


def shard_filename(shard_key: str) -> str:
    """``part-<safe_key(key)>.parquet``."""
    return f"part-{safe_key(shard_key)}.parquet"


def relative_path(
    run_id: str | None = None,
    round: int | None = None,
    stage: str | None = None,
    table_name: str | None = None,
    shard_key: str | None = None,
) -> str:
    """Path below the root, as deep as the arguments go (each needs the ones before it).

    ``relative_path("r1", 0, "sample", "steps", "t#0")`` ->
    ``"runs/r1/round=0/sample/steps/part-t_0-<hash>.parquet"``; ``relative_path()`` -> ``"runs"``.
    """
    given = [run_id, round, stage, table_name, shard_key]
    depth = next((i for i, v in enumerate(given) if v is None), len(given))
    if any(v is not None for v in given[depth:]):
        raise ValueError("run_id, round, stage, table_name, shard_key: each needs those before it")
    parts = ["runs"]
    if run_id is not None:
        parts.append(_check_name("run_id", run_id))
    if round is not None:
        if round < 0:
            raise ValueError(f"round must be >= 0, got {round}")
        parts.append(f"round={round}")
    if stage is not None:
        parts.append(_check_name("stage", stage))
    if table_name is not None:
        parts.append(_check_table_name(table_name))
    if shard_key is not None:
        parts.append(shard_filename(shard_key))
    return "/".join(parts)


def _redact(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def _resolve_endpoint(endpoint_url: str | None) -> str | None:
    if endpoint_url:
        return endpoint_url
    return settings().s3_endpoint or os.environ.get("AWS_ENDPOINT_URL") or None  # the AWS SDKs' own variable


class Storage:
    """Reads and writes record shards under one root URI (see the module docstring)."""

    def __init__(self, root: str, *, endpoint_url: str | None = None) -> None:
        protocol = get_protocol(root)
        options: dict[str, object] = {}
        self._endpoint_url: str | None = None
        if protocol in _S3_PROTOCOLS:
            self._endpoint_url = _resolve_endpoint(endpoint_url)
            # Own instance and no listing cache: other workers write to the same prefix.
            options = {"skip_instance_cache": True, "use_listings_cache": False}
            if self._endpoint_url:
                options["endpoint_url"] = self._endpoint_url
        elif endpoint_url is not None:
            raise ValueError(f"endpoint_url applies to S3 roots only, not {protocol!r}")
        self._root = root
        self._fs, self._root_path = fsspec.core.url_to_fs(root, **options)
        self._root_path = self._root_path.rstrip("/")

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={_redact(self._endpoint_url)!r}" if self._endpoint_url else ""
        return f"Storage({_redact(self._root)!r}{endpoint})"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The underlying fsspec filesystem (paths on it are `path(...)` results)."""
        return self._fs

    def path(
        self,
        run_id: str | None = None,
        round: int | None = None,
        stage: str | None = None,
        table_name: str | None = None,
        shard_key: str | None = None,
    ) -> str:
        """Path on `fs` (no protocol) of a run, round, stage, table or shard (`relative_path`)."""
        return f"{self._root_path}/{relative_path(run_id, round, stage, table_name, shard_key)}"

    def uri(
        self,
        run_id: str | None = None,
        round: int | None = None,
        stage: str | None = None,
        table_name: str | None = None,
        shard_key: str | None = None,
    ) -> str:
        """Full URI (``file:///...`` or ``s3://...``) of the same; see `relative_path`."""
        return self._fs.unstrip_protocol(self.path(run_id, round, stage, table_name, shard_key))

    def write_shard(
        self,
        run_id: str,
        round: int,
        stage: str,
        table_name: TableName,
        table: pa.Table,
        shard_key: str,
    ) -> str:
        """Atomically write (or replace) one shard; returns its URI.

        The table must have the table's schema exactly, and every row the same
        run_id/round/stage as its path.
        """
        final = self.path(run_id, round, stage, table_name, shard_key)
        validate_table(table, SCHEMAS[table_name])
        for column, value in (("run_id", run_id), ("round", round), ("stage", stage)):
            if table.num_rows and not pc.all(pc.equal(table.column(column), value)).as_py():
                raise ValueError(f"rows whose {column} is not {value!r} cannot go in this shard")
        return self._commit(final, lambda f: pq.write_table(table, f, compression="zstd"))

    def write_file(self, path: str, data: bytes) -> str:
        """Atomically write (or replace) one file at `path` (a path on `fs`, e.g. from
        `screenshot_path`); returns its URI. Same commit as shards: a temporary name, then a move."""
        return self._commit(path, lambda f: f.write(data))

    def screenshot_path(self, run_id: str, round: int, stage: str, trajectory_id: str, step: int) -> str:
        """``<stage>/screenshots/<safe_key(trajectory_id)>/<step>.png``: beside the trajectory's
        shards, one folder per trajectory (a rerun of the trajectory replaces its files)."""
        return f"{self.path(run_id, round, stage)}/screenshots/{safe_key(trajectory_id)}/{int(step)}.png"

    def _commit(self, final: str, write: Callable[[IO[bytes]], object]) -> str:
        """Write through `write` to a temporary name in `final`'s folder, then move it to `final`."""
        directory, name = final.rsplit("/", 1)
        temp = f"{directory}/.tmp-{name}.{uuid.uuid4().hex}"
        self._fs.makedirs(directory, exist_ok=True)
        try:
            with self._fs.open(temp, "wb") as f:
                write(f)
            self._fs.mv(temp, final)
        except BaseException:
            if self._fs.exists(temp):
                self._fs.rm(temp)
            raise
        return self._fs.unstrip_protocol(final)

    @property
    def endpoint_url(self) -> str | None:
        """The S3 endpoint in use (None: AWS itself, or a local root)."""
        return self._endpoint_url

    def put_dir(self, local: Path | str, run_id: str, round: int, stage: str, name: str) -> str:
        """Copy a local folder (a LoRA adapter) to `<stage>/<name>/`, replacing it; returns its URI.

        Files go to a temporary folder first, which is then moved, so readers see a whole
        folder or none (on S3 each object is atomic; the folder appears when the move ends).
        """
        final = f"{self.path(run_id, round, stage)}/{_check_name('artifact name', name)}"
        temp = f"{final.rsplit('/', 1)[0]}/.tmp-{name}.{uuid.uuid4().hex}"
        self._fs.put(str(local).rstrip("/") + "/", temp, recursive=True)
        if self._fs.exists(final):
            self._fs.rm(final, recursive=True)
        self._fs.mv(temp, final, recursive=True)
        return self._fs.unstrip_protocol(final)

    def local_dir(self, uri: str, cache: Path | str) -> Path:
        """A local folder with the contents of `uri` (itself when it is local; else a download
        cached by the remote files' names, sizes and ETags, so an adapter retrained at the same
        URI is fetched again)."""
        path = self._fs._strip_protocol(uri)
        if self._fs.protocol in ("file", "local") or "file" in self._fs.protocol:
            return Path(path)
        listing = self._fs.find(path.rstrip("/"), detail=True)
        version = sorted((k[len(path):], v.get("size"), str(v.get("ETag") or v.get("LastModified") or ""))
                         for k, v in listing.items())
        if not version:
            raise FileNotFoundError(f"nothing stored at {uri}")
        key = hashlib.sha256(repr((uri, version)).encode()).hexdigest()[:16]
        target = Path(cache) / key
        if not target.exists():
            partial = target.with_name(target.name + f".partial-{uuid.uuid4().hex}")
            self._fs.get(path.rstrip("/") + "/", str(partial), recursive=True)
            partial.rename(target)
        return target

    def _shard_paths(
        self, run_id: str, round: int | None, stage: str | None, table_name: str | None
    ) -> list[str]:
        pattern = "/".join(
            [
                self.path(run_id),
                "round=*" if round is None else f"round={round}",
                "*" if stage is None else _check_name("stage", stage),
                "*" if table_name is None else _check_table_name(table_name),
                "part-*.parquet",
            ]
        )
        return sorted(self._fs.glob(pattern))

    def list_shards(
        self,
        run_id: str,
        round: int | None = None,
        stage: str | None = None,
        table_name: str | None = None,
    ) -> list[str]:
        """Sorted URIs of the committed shards matching the filters (None = any)."""
        paths = self._shard_paths(run_id, round, stage, table_name)
        return [self._fs.unstrip_protocol(p) for p in paths]

    def exists(
        self,
        run_id: str,
        round: int | None = None,
        stage: str | None = None,
        table_name: str | None = None,
        shard_key: str | None = None,
    ) -> bool:
        """Whether that shard is committed; without a shard key, whether any shard matches."""
        if shard_key is not None:
            return self._fs.exists(self.path(run_id, round, stage, table_name, shard_key))
        return bool(self._shard_paths(run_id, round, stage, table_name))

    def dataset(
        self,
        run_id: str,
        round: int | None = None,
        stage: str | None = None,
        *,
        table_name: TableName,
    ) -> ds.Dataset:
        """A `pyarrow.dataset` over the committed shards of one table (hive on ``round``)."""
        return ds.dataset(
            self._shard_paths(run_id, round, stage, table_name),  # validates table_name first
            schema=SCHEMAS[table_name],
            format="parquet",
            filesystem=self._fs,
            partitioning=_ROUND_PARTITIONING,
            partition_base_dir=self.path(run_id),
        )

    def read_table(
        self,
        run_id: str,
        round: int | None = None,
        stage: str | None = None,
        *,
        table_name: TableName,
    ) -> pa.Table:
        """All committed rows of one table for a run, optionally one round and/or stage. An
        unreadable shard raises `UnreadableShard` naming it (`read_table_checked` skips it)."""
        table, broken = self.read_table_checked(run_id, round, stage, table_name=table_name)
        if broken:
            raise UnreadableShard(broken)
        return table

    def read_table_checked(
        self,
        run_id: str,
        round: int | None = None,
        stage: str | None = None,
        *,
        table_name: TableName,
    ) -> tuple[pa.Table, list[str]]:
        """(the rows of every readable shard, the URIs of the unreadable ones). One dataset read
        when all are fine; file by file only after a failure, to name the broken ones."""
        try:
            return self.dataset(run_id, round, stage, table_name=table_name).to_table(), []
        except (pa.ArrowInvalid, OSError):
            pass
        good, broken = [], []
        for path in self._shard_paths(run_id, round, stage, table_name):
            try:
                pq.read_metadata(path, filesystem=self._fs)
                good.append(path)
            except (pa.ArrowInvalid, OSError):
                broken.append(self._fs.unstrip_protocol(path))
        table = ds.dataset(good, schema=SCHEMAS[table_name], format="parquet", filesystem=self._fs,
                           partitioning=_ROUND_PARTITIONING, partition_base_dir=self.path(run_id)).to_table()
        return table, broken

    def shard_readable(self, run_id: str, round: int, stage: str, table_name: TableName, shard_key: str) -> int | None:
        """The row count of a committed shard; None when it is missing or unreadable."""
        path = self.path(run_id, round, stage, table_name, shard_key)
        try:
            return pq.read_metadata(path, filesystem=self._fs).num_rows
        except (pa.ArrowInvalid, OSError):
            return None

    def remove(self, uri_or_path: str) -> None:
        """Delete one stored file (a broken shard being repaired)."""
        path = self._fs._strip_protocol(uri_or_path)
        if self._fs.exists(path):
            self._fs.rm(path)

    def list_runs(self) -> list[str]:
        """Sorted run ids that have anything stored."""
        runs = self.path()
        if not self._fs.exists(runs):
            return []
        entries = self._fs.ls(runs, detail=True)
        dirs = (e["name"].rstrip("/") for e in entries if e["type"] == "directory")
        return sorted(d.rsplit("/", 1)[-1] for d in dirs)
