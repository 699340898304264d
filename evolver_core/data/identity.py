"""What produced a stage's results: its identity, and the digests it is made of.

A stage's identity is a small JSON object: the stage, a digest of the domain code it runs
(`code_digest`), content digests of the models it uses (`training.identity.model_digest`: base model and
LoRA adapter), its parameters (sampling, suite, split, the chosen task ids, ...), and the
identities of the stages it reads. Its sha256 (`StageIdentity.digest`) is written beside
the stage's data (`run_layout.open_stage`) and into the Prefect cache key
(`tasks.common.STAGE_CACHE`), so results of another identity are never resumed, mixed or
reported as this one's (DESIGN.md "Results and their identity").

Code digests are per stage, not per package: a stage's code is the closure of the
`evolver_core` modules its entry modules import (at any depth, lazy imports included) plus
the prompt files those modules name in `load_prompt("...")` calls. So a changed judge
prompt reruns the judge and what reads its verdicts, but not sampling. Each file is read
once per process.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Iterable, Mapping


PACKAGE = "evolver_core"
CODE_ROOT = Path(__file__).resolve().parents[1]  # the evolver_core folder; tests point it at a copy
PROMPT_DIR_NAME = "prompts"
# Files this size and up (model shards) are digested by size, head and tail: hashing a 15 GB
# model in every process would cost a minute, and shards are written once, never edited.
_WHOLE_FILE_LIMIT = 256 << 20
_EDGE = 4 << 20


def fingerprint(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (dicts sorted; tuples as lists)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---- code -----------------------------------------------------------------------------------

def _module_file(root: Path, module: str) -> Path | None:
    rel = module.split(".")[1:]
    for candidate in (root.joinpath(*rel).with_suffix(".py"), root.joinpath(*rel, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def _imports_and_prompts(path: Path, module: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    imports: set[str] = set()
    prompts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            imports.add(base)
            imports.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_prompt"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            prompts.add(node.args[0].value)
    return {m for m in imports if m == PACKAGE or m.startswith(PACKAGE + ".")}, prompts


def module_closure(modules: Iterable[str], root: Path | None = None,
                   exclude: Iterable[str] = ()) -> dict[str, Path]:
    """The `evolver_core` modules `modules` import, transitively (themselves included), not
    entering `exclude` (a path the stage does not take, e.g. look-ahead in plain sampling)."""
    root = root or CODE_ROOT
    seen: dict[str, Path] = {}
    todo = list(modules)
    skip = set(exclude)
    while todo:
        m = todo.pop()
        if m in seen or m in skip:
            continue
        path = _module_file(root, m)
        if path is None:
            continue  # `from pkg import name` where name is not a module
        seen[m] = path
        todo += _imports_and_prompts(path, m)[0]
    return seen


@cache
def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def _code_digest(modules: tuple[str, ...], exclude: tuple[str, ...], root: Path) -> str:
    closure = module_closure(modules, root, exclude)
    prompts = set().union(*(_imports_and_prompts(p, m)[1] for m, p in closure.items()))
    parts = {m: _file_digest(p) for m, p in closure.items()}
    for name in prompts:
        path = root / PROMPT_DIR_NAME / (name if name.endswith(".txt") else f"{name}.txt")
        parts[f"prompt:{name}"] = _file_digest(path) if path.is_file() else "missing"
    return fingerprint(parts)


def code_digest(*modules: str, exclude: Iterable[str] = ()) -> str:
    """Digest of the domain code behind `modules` (their import closure, less `exclude`, and
    the prompts it names), computed once per process."""
    return _code_digest(tuple(sorted(modules)), tuple(sorted(exclude)), CODE_ROOT)


def clear_caches() -> None:
    """Forget file digests (tests that edit a copy of the code)."""
    _file_digest.cache_clear()
    _code_digest.cache_clear()
    _folder_digest_memo.clear()


# ---- models ---------------------------------------------------------------------------------

_folder_digest_memo: dict[tuple, str] = {}


def _stat_key(folder: Path) -> tuple:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def folder_content_digest(folder: Path | str) -> str:
    """sha256 over a folder's files (relative names and contents; large files by size, head and
    tail). Memoised on the files' sizes and modification times, so a retrained adapter at the
    same path gets a new digest and an unchanged one is not read again."""
    folder = Path(folder)
    key = (str(folder.resolve()), _stat_key(folder))
    if key in _folder_digest_memo:
        return _folder_digest_memo[key]
    h = hashlib.sha256()
    for rel, size, _ in key[1]:
        h.update(f"{rel}\0{size}\0".encode())
        with (folder / rel).open("rb") as f:
            if size < _WHOLE_FILE_LIMIT:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            else:
                h.update(f.read(_EDGE))
                f.seek(size - _EDGE)
                h.update(f.read(_EDGE))
    _folder_digest_memo[key] = h.hexdigest()
    return _folder_digest_memo[key]


# ---- stages ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageIdentity:
    """What produced a stage: `stage` and `params` (JSON values; models via `model_identity`,
    upstream stages by their digests)."""

    stage: str
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return fingerprint(self.to_json())

    @property
    def short(self) -> str:
        return self.digest[:12]

    def to_json(self) -> dict:
        return {"stage": self.stage, "code": self.code, "params": dict(self.params)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StageIdentity":
        return cls(stage=data["stage"], code=data["code"], params=data.get("params", {}))
