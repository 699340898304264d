"""How `webevolver` fails: one or two lines a person can act on, the traceback in a log file.

Why: a malformed task file's clear `TaskFileError` used to come after 183 lines of traceback
(Prefect logs every failed task and flow with its traceback, then the command re-raised it).
Now:

- the command prints what failed, with the file or URI and what to do (the error's own
  message for the errors a person sees, `WebEvolverError`s; the type and first line for any
  other), then where the traceback is, and exits 1;
- every log record of the command, tracebacks included, goes to its log file,
  ``$WEBEVOLVER_HOME/logs/webevolver-<time>-<pid>.log`` (created on the first record);
- on the console, log records keep their one-line message and lose their traceback, unless
  ``webevolver --debug`` asks for them (then the failure's traceback is printed too).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import typer

from evolver_core.contracts.errors import WebEvolverError
from evolver_core.contracts.task import TaskFileError
from evolver_core.data.storage import DamagedFolder
from evolver_core.settings import settings

HINTS: dict[type[BaseException], str] = {
    TaskFileError: "fix the file, then rerun the same command",
    DamagedFolder: "replace or remove that folder, then rerun the same command (a run's own adapter is "
                   "trained again)",
}
EXIT_FAILED = 1
EXIT_SERVER_LOST = 3


class _Options:
    debug = False  # `webevolver --debug`
    log_file: Path | None = None
    active = False  # inside the `webevolver` command (not a test calling a command's function)


def set_debug(debug: bool) -> None:
    _Options.debug = debug


def in_command() -> bool:
    """Whether this process runs the `webevolver` command (it ends when the command does)."""
    return _Options.active


def log_file() -> Path:
    """This command's log file (one per invocation; created when the first record is written)."""
    if _Options.log_file is None:
        _Options.log_file = settings().home / "logs" / f"webevolver-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    return _Options.log_file


class _WithoutTraceback(logging.Formatter):
    """Another handler's formatter, minus the traceback of the record (the log file keeps it)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _loggers() -> Iterator[logging.Logger]:
    yield logging.getLogger()
    yield from (lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))


def log_to_file() -> None:
    """Send every record (tracebacks included) to `log_file()`; console handlers lose the
    tracebacks unless --debug. Call again after a library configures logging (Prefect does
    at import): handlers already seen are left as they are. Only inside the command."""
    if not _Options.active:
        return
    root = logging.getLogger()
    if not any(getattr(h, "_webevolver", False) for h in root.handlers):
        log_file().parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file(), delay=True)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._webevolver = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if _Options.debug:
        return
    for logger in _loggers():
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                    and not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter))


def _known(exc: BaseException) -> WebEvolverError | None:
    """The first `WebEvolverError` in `exc`'s chain (Prefect re-raises task errors wrapped or as
    the cause of its own)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, WebEvolverError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def summary(exc: BaseException) -> str:
    """The line that says what failed (and, for a `WebEvolverError`, what to do)."""
    known = _known(exc)
    if known is None:
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"failed: {type(exc).__name__}: {first}" if first else f"failed: {type(exc).__name__}"
    hint = next((h for t, h in HINTS.items() if isinstance(known, t)), None)
    return f"{known}" + (f"; {hint}" if hint else "")


def report(exc: BaseException) -> None:
    """Print the summary and where the traceback is (all of it with --debug); log it there."""
    text = "".join(traceback.format_exception(exc))
    path = log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} command failed: {' '.join(sys.argv)}\n{text}")
    if _Options.debug:
        print(text, file=sys.stderr, end="")
    print(f"webevolver: {summary(exc)}", file=sys.stderr)
    print(f"  traceback: {path}" + ("" if _Options.debug else " (or rerun with `webevolver --debug ...`)"),
          file=sys.stderr)


class ReportingTyper(typer.Typer):
    """A Typer app whose failures are reported by `report` instead of a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _Options.active = True
        log_to_file()
        try:
            return super().__call__(*args, **kwargs)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends the command the same way
            report(exc)
            sys.exit(EXIT_FAILED)
