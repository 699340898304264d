"""Model folders on disk: where they live, how one is written, what they all say, and their
content digest.

Why: every server backend wants a plain Hugging Face model folder (config, safetensors,
tokenizer with chat template), and nothing may come from the Hub at run time. Folders are
written to a temporary directory and renamed into place, so a killed build never leaves a
half-written model behind; an existing folder is reused. The cache root is
``$WEBEVOLVER_HOME/models`` (default ``~/.cache/webevolver/models``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evolver_core.settings import webevolver_home


def models_home() -> Path:
    return webevolver_home() / "models"


def model_cache(cache_dir: Path | str | None) -> Path:
    """`cache_dir`, or by default `models_home()`."""
    return Path(cache_dir) if cache_dir is not None else models_home()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, building it first with `build(tmp_dir)` unless it already exists.

    The build writes into a sibling temporary folder that is renamed into place; when two
    builders race, the first rename wins and the other's copy is discarded.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def enable_sampling(model) -> None:
    """`transformers serve` samples only when the generation config says ``do_sample`` (a
    request's temperature 0 turns it off again); without it every request is greedy."""
    model.generation_config.do_sample = True


def folder_digest(*folders: Path | str) -> str:
    """sha256 over the relative paths and contents of every file in the folders, in order."""
    h = hashlib.sha256()
    for folder in map(Path, folders):
        h.update(b"\0folder\0")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class WeightsSize:
    """A model's weights as its folder stores them: parameters and bytes (tied embeddings once)."""

    params: int
    bytes: int


def weights_size(folder: Path | str) -> WeightsSize:
    """Parameters and bytes of the weights in a model folder, from its safetensors files'
    headers (8 bytes of little-endian header length, then JSON: each tensor's shape and byte
    range), without loading them: exact for any architecture, unlike a count from config.json."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    params = size = 0
    for path in files:
        with path.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, tensor in header.items():
            if name != "__metadata__":
                params += math.prod(tensor["shape"])
                size += tensor["data_offsets"][1] - tensor["data_offsets"][0]
    return WeightsSize(params=params, bytes=size)
