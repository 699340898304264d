"""Whether a process lives, and when it started (to tell a reused pid), from this host's /proc."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def _stat_fields(pid: int) -> Optional[list[str]]:
    """The fields of /proc/<pid>/stat after the command name (state first); None without them."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"  # no /proc: the signal check is all there is


def start_ticks(pid: int) -> Optional[int]:
    """When `pid` started, in clock ticks since boot; None without /proc or without the pid."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None
