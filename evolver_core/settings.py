"""Every `WEBEVOLVER_*` environment variable, read in one place (`Settings.from_env`).

Secrets are never among them: API keys and S3 credentials stay in the variables their
clients read (`OPENAI_API_KEY` via `ModelSpec.api_key_env`, the AWS chain).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional


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
        threads = env.get("WEBEVOLVER_SERVER_THREADS")
        return cls(
            storage=env.get("WEBEVOLVER_STORAGE") or None,
            home=Path(env.get("WEBEVOLVER_HOME") or Path.home() / ".cache" / "webevolver"),
            data_dir=Path(env["WEBEVOLVER_DATA_DIR"]) if env.get("WEBEVOLVER_DATA_DIR") else None,
            chromium=env.get("WEBEVOLVER_CHROMIUM") or None,
            offline=env.get("WEBEVOLVER_OFFLINE", "") not in ("", "0"),
            s3_endpoint=env.get("WEBEVOLVER_S3_ENDPOINT") or None,
            server_threads=int(threads) if threads else None,
            vllm_python=env.get("WEBEVOLVER_VLLM_PYTHON") or None,
        )


def settings() -> Settings:
    """The settings of this process's environment now (read afresh: tests change it)."""
    return Settings.from_env()


def storage_root(storage: Optional[str] = None) -> str:
    """The storage root: `storage`, else $WEBEVOLVER_STORAGE, else the working directory."""
    return storage or settings().storage or os.getcwd()


def download_cache() -> str:
    """Where remote adapters are downloaded to (keyed by their content)."""
    return str(settings().home / "downloads")
