"""Launch Debian's chromium through Playwright (never `playwright install`).

The flags keep a headless chromium quiet on a machine without internet: without the
background-networking ones it keeps opening connections that this network refuses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evolver_core.contracts.errors import WebEvolverError
from evolver_core.settings import VARIABLES, settings

CHROMIUM_ENV = VARIABLES["chromium"]
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
]


class ChromiumNotFound(WebEvolverError, RuntimeError):
    pass


class PageTimeout(WebEvolverError, TimeoutError):
    """A page that did not load or could not be observed within its deadline."""


def chromium_path() -> str:
    """Path of the chromium binary: $WEBEVOLVER_CHROMIUM, then `chromium` on PATH."""
    candidates = [settings().chromium, shutil.which("chromium"), shutil.which("chromium-browser"),
                  "/usr/bin/chromium"]
    for c in candidates:
        if c and Path(c).exists():
            return c
    raise ChromiumNotFound(
        "chromium not found. Install Debian's package (`apt-get install -y chromium`) "
        f"or set {CHROMIUM_ENV} to a Chromium binary. `playwright install` is not needed."
    )
