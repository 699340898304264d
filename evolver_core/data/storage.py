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

Folders (LoRA adapters, `put_dir`) are committed whole too, and a reader never sees none or
half of one while it is replaced: the files are written aside with a commit record
(``COMMIT``: every file's size, and on S3 the version folder holding them) written last. On a
local disk the folder is written beside its final name and swapped in with one atomic
rename (`renameat2(RENAME_EXCHANGE)`); on S3, where nothing renames, the files go to a new
version folder ``<name>/v-<id>/`` and the PUT of ``<name>/COMMIT`` makes it current. Readers
(`committed`, `local_dir`) trust only a folder whose commit record matches its files.

Roots are checked before anything is written (`check_root`): a local path, or a URI of a
known scheme with its ``://`` (``s3:/bucket/x`` is refused, never taken for a local folder).

S3 settings: the endpoint comes from the `endpoint_url` argument, else
``WEBEVOLVER_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL``; credentials come only from the
standard AWS chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles, roles)
and are never passed, held or shown by this class.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
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

from evolver_core.contracts.errors import WebEvolverError
from evolver_core.data.records import SCHEMAS, TableName, validate_table
from evolver_core.settings import settings

_S3_PROTOCOLS = ("s3", "s3a")
_LOCAL_PROTOCOLS = ("file", "local")
KNOWN_SCHEMES = (*_LOCAL_PROTOCOLS, *_S3_PROTOCOLS, "memory")  # memory: tests and notebooks
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(.*)", re.DOTALL)  # 2+ letters: a drive letter is no scheme
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rules
COMMIT_FILE = "COMMIT"  # a committed folder's record: {"files": {name: size}[, "version": "v-<id>"]}
_CHECK_TRIES = 5  # a folder check overtaken by this many commits in a row gives up
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ROUND_PARTITIONING = ds.partitioning(pa.schema([("round", pa.int32())]), flavor="hive")


class UnreadableShard(WebEvolverError, OSError):
    """Stored shards that cannot be read (truncated by a full disk, a killed copy)."""

    def __init__(self, uris: list[str]):
        super().__init__(f"{len(uris)} unreadable shard(s), first: {uris[0]} (a rerun of the stage repairs them; "
                         f"`show` and `view` skip them)")
        self.uris = uris


class StorageURIError(WebEvolverError, ValueError):
    """A storage root that names no storage this project can use (unknown scheme, bad shape)."""


class DamagedFolder(WebEvolverError, OSError):
    """A stored folder (an adapter) that is missing, uncommitted, or whose files no longer
    match its commit record (truncated, deleted)."""


def check_root(root: str) -> str:
    """`root` itself when it is a local path or a well-formed URI of a `KNOWN_SCHEMES` scheme;
    else `StorageURIError` saying what shape is expected."""
    found = _SCHEME.fullmatch(root)
    if found is None:
        return root  # a local path
    scheme, rest = found.group(1).lower(), found.group(2)
    if scheme not in KNOWN_SCHEMES:
        folder = "" if rest.startswith("//") else f" (./{root} for a local folder of that name)"
        raise StorageURIError(f"storage root {root!r}: unknown scheme {scheme!r}; use a local folder, "
                              f"file:///<absolute path> or s3://<bucket>/<prefix>{folder}")
    if not rest.startswith("//"):
        raise StorageURIError(f"storage root {root!r}: write {scheme}:// with two slashes, "
                              f"e.g. {scheme}://{rest.lstrip('/')}")
    if scheme in _S3_PROTOCOLS and not _BUCKET.fullmatch(bucket := rest[2:].split("/", 1)[0]):
        raise StorageURIError(f"storage root {root!r}: {bucket!r} is not an S3 bucket name "
                              "(3-63 lower-case letters, digits, dots and dashes); use s3://<bucket>/<prefix>")
    if scheme in _LOCAL_PROTOCOLS and not rest[2:].startswith("/"):
        raise StorageURIError(f"storage root {root!r}: {scheme}:// needs an absolute path, e.g. "
                              f"{scheme}:///{rest[2:]}")
    return root


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
        protocol = get_protocol(check_root(root))
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
        self._protocol = protocol
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

    @property
    def is_local(self) -> bool:
        """Whether the root is a local disk (paths on `fs` are then OS paths)."""
        return self._protocol in _LOCAL_PROTOCOLS

    def read_file(self, path: str) -> bytes | None:
        """The bytes of one stored file (a path on `fs`); None when there is none."""
        try:
            return self._fs.cat_file(path)
        except FileNotFoundError:
            return None

    def create_file(self, path: str, data: bytes) -> bool:
        """Write `data` to `path` only if nothing is there; whether this call created it.

        Exclusive where the storage offers it: a local file is written aside and hard-linked
        into place (a reader never sees it empty); S3 uses a conditional PUT (``If-None-Match:
        *``). Other filesystems check, then write (not atomic: two writers may both win)."""
        directory = path.rsplit("/", 1)[0]
        self._fs.makedirs(directory, exist_ok=True)
        if self.is_local:
            temp = f"{path}.{uuid.uuid4().hex}.tmp"
            Path(temp).write_bytes(data)
            try:
                os.link(temp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(temp)
        if self._protocol in _S3_PROTOCOLS:
            try:
                self._fs.pipe_file(path, data, mode="create")
                return True
            except FileExistsError:
                return False
            except OSError as exc:  # s3fs maps some 412 replies to EINVAL
                if exc.errno == errno.EINVAL and "precondition" in str(exc).lower():
                    return False
                raise
        if self._fs.exists(path):
            return False
        self._fs.pipe_file(path, data)
        return True

    def put_dir(self, local: Path | str, run_id: str, round: int, stage: str, name: str) -> str:
        """Commit a local folder (a LoRA adapter) as `<stage>/<name>/`, replacing it; returns its URI.

        Readers see the old folder or the new one, whole (module docstring): locally the
        folder is written aside and swapped in by one rename; on S3 its files go to a new
        version folder that the commit record, written last, makes current."""
        final = f"{self.path(run_id, round, stage)}/{_check_name('artifact name', name)}"
        source = Path(local)
        files = {str(p.relative_to(source)): p.stat().st_size for p in sorted(source.rglob("*")) if p.is_file()}
        if self.is_local:
            temp = f"{final.rsplit('/', 1)[0]}/.tmp-{name}.{uuid.uuid4().hex}"
            shutil.copytree(source, temp)
            Path(temp, COMMIT_FILE).write_text(json.dumps({"files": files}, sort_keys=True))
            if (old := _swap_in(temp, final)) is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            previous = self._commit_record(final)
            version = f"v-{uuid.uuid4().hex[:16]}"
            self._fs.put(str(source).rstrip("/") + "/", f"{final}/{version}", recursive=True)
            self.write_file(f"{final}/{COMMIT_FILE}", json.dumps({"files": files, "version": version}).encode())
            # Keep the previous version: a reader that resolved it a moment ago may still be downloading.
            keep = {version, (previous or {}).get("version")}
            for entry in self._fs.ls(final, detail=False):
                if (folder := entry.rstrip("/").rsplit("/", 1)[-1]).startswith("v-") and folder not in keep:
                    self._fs.rm(entry, recursive=True)
        return self._fs.unstrip_protocol(final)

    def _commit_record(self, path: str) -> dict | None:
        data = self.read_file(f"{path}/{COMMIT_FILE}")
        try:
            return json.loads(data) if data is not None else None
        except ValueError:
            return None

    @staticmethod
    def _files_of(path: str, record: dict) -> str:
        """Where a committed folder's files are: the folder (local) or its current version (S3)."""
        return f"{path}/{record['version']}" if "version" in record else path

    def check_committed(self, uri: str) -> None:
        """Raise `DamagedFolder` (naming the folder and the first mismatch) unless `uri` is a
        folder committed by `put_dir` whose files still match its commit record. A check that a
        commit overtook (another folder swapped in, another version recorded) is made again."""
        path = self._fs._strip_protocol(uri).rstrip("/")
        for _ in range(_CHECK_TRIES):
            version = self._version_of(path)
            try:
                return self._check_record(uri, path)
            except DamagedFolder:
                if version == self._version_of(path):
                    raise
        raise DamagedFolder(f"{uri} was replaced {_CHECK_TRIES} times while it was checked")

    def _version_of(self, path: str) -> object:
        """What changes when a commit replaces the folder: its inode locally, its record on S3."""
        if self.is_local:
            with contextlib.suppress(OSError):
                return os.stat(path).st_ino
            return None
        return self.read_file(f"{path}/{COMMIT_FILE}")

    def _check_record(self, uri: str, path: str) -> None:
        record = self._commit_record(path)
        if record is None:
            raise DamagedFolder(f"{uri} holds no committed folder (never stored whole, or removed)")
        files = self._files_of(path, record)
        try:
            listing = self._fs.find(files, detail=True)
        except FileNotFoundError:
            listing = {}
        found = {k[len(files) + 1:]: v.get("size") for k, v in listing.items()}
        for name, size in record["files"].items():
            if found.get(name) != size:
                what = "is missing" if name not in found else f"has {found[name]} bytes, committed {size}"
                raise DamagedFolder(f"{uri} is damaged: {name} {what}")

    def committed(self, uri: str) -> bool:
        """Whether `uri` is a whole committed folder (`check_committed` passes)."""
        try:
            self.check_committed(uri)
            return True
        except (DamagedFolder, FileNotFoundError):
            return False

    def local_dir(self, uri: str, cache: Path | str) -> Path:
        """A local folder with the contents of the committed folder `uri`, checked against its
        commit record (`DamagedFolder` otherwise): the folder itself when it is local; else
        its current version, downloaded once into `cache` (a retrained folder at the same URI
        is a new version, so it is fetched again)."""
        self.check_committed(uri)
        path = self._fs._strip_protocol(uri).rstrip("/")
        if self.is_local:
            return Path(path)
        files = self._files_of(path, self._commit_record(path) or {})
        target = Path(cache) / hashlib.sha256(f"{uri}\0{files}".encode()).hexdigest()[:16]
        if not target.exists():
            partial = target.with_name(target.name + f".partial-{uuid.uuid4().hex}")
            self._fs.get(files + "/", str(partial), recursive=True)
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


def _swap_in(temp: str, final: str) -> str | None:
    """Move folder `temp` to `final` in one atomic step; returns where the old `final` now is
    (None: there was none). Linux swaps the two names with renameat2(RENAME_EXCHANGE); where
    that is missing, the old folder is renamed away first (a moment without `final`)."""
    try:
        os.rename(temp, final)  # no final yet (or an empty one)
        return None
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR):
            raise
    libc = ctypes.CDLL(None, use_errno=True)
    exchange = getattr(libc, "renameat2", None)
    if exchange is not None and exchange(_AT_FDCWD, os.fsencode(temp), _AT_FDCWD, os.fsencode(final),
                                         _RENAME_EXCHANGE) == 0:
        return temp
    aside = f"{temp}.old"
    os.rename(final, aside)
    os.rename(temp, final)
    return aside
