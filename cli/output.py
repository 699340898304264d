"""Printing helpers: every `--json` command and every bench ends with ONE JSON object line."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

console = Console(highlight=False, soft_wrap=True)  # no hard wraps: output is often piped


def emit_json(obj: dict[str, Any]) -> None:
    """The last line of output: one JSON object (machine-readable)."""
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)
