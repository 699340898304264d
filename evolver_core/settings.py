"""Every `WEBEVOLVER_*` environment variable, read in one place (`Settings.from_env`).

Secrets are never among them: API keys and S3 credentials stay in the variables their
clients read (`OPENAI_API_KEY` via `ModelSpec.api_key_env`, the AWS chain).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional


# The variable behind each setting (error messages name them).
VARIABLES = {"storage": "WEBEVOLVER_STORAGE", "home": "WEBEVOLVER_HOME", "data_dir": "WEBEVOLVER_DATA_DIR",
             "chromium": "WEBEVOLVER_CHROMIUM", "offline": "WEBEVOLVER_OFFLINE",
             "s3_endpoint": "WEBEVOLVER_S3_ENDPOINT", "server_threads": "WEBEVOLVER_SERVER_THREADS",
             "vllm_python": "WEBEVOLVER_VLLM_PYTHON"}


@dataclass(frozen=True)
class Settings:
    storage: Optional[str]  # WEBEVOLVER_STORAGE: the storage root (default: the working directory)
    home: Path  # WEBEVOLVER_HOME: models, downloads, the local Prefect server (default ~/.cache/webevolver)
    data_dir: Optional[Path]  # WEBEVOLVER_DATA_DIR: the live suites' task files (default: data/tasks)
    chromium: Optional[str]  # WEBEVOLVER_CHROMIUM: the browser binary (default: chromium on PATH)
    offline: bool  # WEBEVOLVER_OFFLINE=1: live suites refuse to start (no internet here)
    s3_endpoint: Optional[str]  # WEBEVOLVER_S3_ENDPOINT: an S3-compatible endpoint (MinIO, a test server)
    server_threads: Optional[int]  # WEBEVOLVER_SERVER_THREADS: CPU threads of a local model server
    vllm_python: Optional[str]  # WEBEVOLVER_VLLM_PYTHON: the python of the vLLM venv

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        raw = {name: env.get(variable) or None for name, variable in VARIABLES.items()}
        threads = raw["server_threads"]
        if threads is not None and not threads.isdigit():
            raise ValueError(f"{VARIABLES['server_threads']} must be a whole number of threads, not {threads!r}")
        return cls(
            storage=raw["storage"],
            home=Path(raw["home"] or Path.home() / ".cache" / "webevolver"),
            data_dir=Path(raw["data_dir"]) if raw["data_dir"] else None,
            chromium=raw["chromium"],
            offline=(raw["offline"] or "0") != "0",
            s3_endpoint=raw["s3_endpoint"],
            server_threads=int(threads) if threads else None,
            vllm_python=raw["vllm_python"],
        )


def settings() -> Settings:
    """The settings of this process's environment now (read afresh: tests change it)."""
    return Settings.from_env()


def webevolver_home() -> Path:
    """Root of everything WebEvolver caches locally (models, server logs, the local Prefect server)."""
    return settings().home.expanduser()


def storage_root(storage: Optional[str] = None) -> str:
    """The storage root: `storage`, else $WEBEVOLVER_STORAGE, else the working directory."""
    return storage or settings().storage or os.getcwd()


def download_cache() -> str:
    """Where remote adapters are downloaded to (keyed by their content)."""
    return str(settings().home / "downloads")
