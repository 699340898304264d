"""Strict reading of task files (JSONL and JSON arrays) into `Task`s.

Task files come from public repositories (`data/tasks/`) and from users
(`--task-file my.jsonl`). A typo in one record must stop the run before any browser starts,
with the file, the line and the field named (`my.jsonl:17: field 'ques' missing`), rather
than surface as a `KeyError` in the middle of a rollout. So every field is read through a
`Record`, which checks presence and type and knows where the record sits in its file.

Files whose first non-blank character is `[` are JSON arrays (errors name the line where the
element starts and its array index); all others are JSONL, one object a line (blank lines
are skipped). A file without records is an error.

Navigation allowlist (`Task.allowed_hosts`, convention in `evolver_core/browser/allowlist.py`):
a site task allows its start site's registrable domain and its subdomains (a site on an IP
address or localhost: that `host:port` only); a task that starts
on a search engine's home page (WebVoyager's Google Search tasks, GAIA) is open-web (`*`),
since its answer lives on whatever site the search leads to.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from evolver_core.browser.allowlist import host_port
from evolver_core.settings import settings
from evolver_core.contracts.task import Task, TaskFileError

T = TypeVar("T")


_KIND_NAMES: dict[type, str] = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
_JSON_NAMES: dict[type, str] = {str: "string", int: "int", float: "float", bool: "bool", list: "list", dict: "object"}
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# Second-level labels under which country-code TLDs register names (bbc.co.uk, abc.net.au).
_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "go", "gov", "ne", "net", "or", "org"})
_SEARCH_ENGINES = frozenset({"google.com", "bing.com", "duckduckgo.com"})
# Record fields a web task keeps as descriptive metadata (WebVoyager and Mind2Web formats).
_LABEL_FIELDS = ("web_name", "domain", "subdomain", "website")


def data_dir() -> Path:
    """The folder holding `webvoyager/`, `openwebvoyager/`, `mind2web-live/`.

    `$WEBEVOLVER_DATA_DIR` when set, else the repository's `data/tasks/`.
    """
    return settings().data_dir or Path(__file__).resolve().parents[2] / "data" / "tasks"


def _json_name(value: Any) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Record:
    """One object of a task file, with where it sits, so every error can point at it."""

    path: str
    line: int | None
    data: Mapping[str, Any]
    element: int | None = None  # index in a JSON array; None for JSONL
    prefix: str = ""  # where a nested object sits in its record, e.g. "evaluation[2]."

    def error(self, name: str | None, problem: str) -> TaskFileError:
        where = "" if self.element is None else f" (array element {self.element})"
        field_name = None if name is None else self.prefix + name
        return TaskFileError(self.path, self.line, field_name, problem + where)

    def get(self, name: str, kind: type[T]) -> T:
        """The field `name`, which must be present and of type `kind`."""
        if name not in self.data:
            raise self.error(name, "missing")
        return self._typed(name, self.data[name], kind)

    def optional(self, name: str, kind: type[T]) -> T | None:
        """The field `name` if present and not null (then it must be of type `kind`)."""
        value = self.data.get(name)
        return None if value is None else self._typed(name, value, kind)

    def text(self, name: str) -> str:
        """A required, non-blank string field."""
        value = self.get(name, str)
        if not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def url(self, name: str) -> str:
        """A required http(s) URL field with a host."""
        value = self.text(name)
        parts = urlsplit(value)
        try:
            parts.port  # a malformed port raises here, rather than in the allowlist later
        except ValueError:
            raise self.error(name, f"must be an http(s) URL, got {value!r} (bad port)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(name, f"must be an http(s) URL, got {value!r}")
        return value

    def nested(self, name: str, value: Any) -> Record:
        """The object `value` found at `name` inside this record, read with the same location."""
        if not isinstance(value, dict):
            raise self.error(name, f"must be {_KIND_NAMES[dict]}, got {_json_name(value)}")
        return Record(self.path, self.line, value, self.element, f"{self.prefix}{name}.")

    def _typed(self, name: str, value: Any, kind: type[T]) -> T:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, f"must be {_KIND_NAMES.get(kind, kind.__name__)}, got {_json_name(value)}")
        return value


def read_records(path: str | Path) -> list[Record]:
    """Every object of a JSONL file or JSON-array file, each with its location."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(shown, None, None, f"cannot be read: {exc}") from exc
    records = _array_records(shown, text) if text.lstrip().startswith("[") else _jsonl_records(shown, text)
    if not records:
        raise TaskFileError(shown, None, None, "contains no tasks")
    return records


def _invalid_json(exc: json.JSONDecodeError) -> str:
    return f"not valid JSON: {exc.msg} (column {exc.colno})"


def _as_record(path: str, line: int, value: Any, element: int | None) -> Record:
    record = Record(path, line, {}, element)
    if not isinstance(value, dict):
        raise record.error(None, f"must be a JSON object, got {_json_name(value)}")
    return Record(path, line, value, element)


def _jsonl_records(path: str, text: str) -> list[Record]:
    records = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TaskFileError(path, line, None, _invalid_json(exc)) from exc
        records.append(_as_record(path, line, value, None))
    return records


def _skip_whitespace(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)  # always matches, perhaps the empty string
    return match.end() if match else position


def _array_records(path: str, text: str) -> list[Record]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskFileError(path, exc.lineno, None, _invalid_json(exc)) from exc
    if not isinstance(values, list):
        raise TaskFileError(path, 1, None, f"must be a JSON array, got {_json_name(values)}")
    # The text is valid JSON: walk it once more to learn the line where each element starts.
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    records = []
    for element in range(len(values)):
        start = _skip_whitespace(text, position)
        _, end = decoder.raw_decode(text, start)
        records.append(_as_record(path, text.count("\n", 0, start) + 1, values[element], element))
        position = _skip_whitespace(text, end) + 1  # past the ',' (or the closing ']')
    return records


def build_tasks(records: Iterable[Record], make: Callable[[Record], Task]) -> list[Task]:
    """`make` applied to each record; a task id seen twice is an error at its second record."""
    tasks: list[Task] = []
    first_seen: dict[str, Record] = {}
    for record in records:
        task = make(record)
        if task.id in first_seen:
            earlier = first_seen[task.id]
            raise record.error("id", f"duplicate task id {task.id!r} (first at line {earlier.line})")
        first_seen[task.id] = record
        tasks.append(task)
    return tasks


def registrable_domain(host: str) -> str:
    """The name a site registered: `www.allrecipes.com` -> `allrecipes.com`, `news.bbc.co.uk` ->
    `bbc.co.uk`. A heuristic (last two labels, three under a country code's `co.`/`com.`/...),
    enough for the hosts of the public task sets without shipping the Public Suffix List."""
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-keep:])


def _is_search_home(url: str) -> bool:
    parts = urlsplit(url)
    return registrable_domain(parts.hostname or "") in _SEARCH_ENGINES and parts.path in ("", "/")


def _site_entries(url: str) -> tuple[str, ...]:
    """The allowlist entries of the site at `url`: its registrable domain and subdomains, or,
    for an IP address or localhost, that one server (`host:port`): every port there is another
    server."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        ipaddress.ip_address(host)
        local = True
    except ValueError:
        local = host == "localhost"
    if local:
        return (host_port(parts),)
    domain = registrable_domain(host)
    return (domain, f"*.{domain}")


def allowed_hosts(start_url: str, *also: str) -> tuple[str, ...]:
    """The allowlist for a task starting at `start_url` that must also reach the URLs `also`."""
    if _is_search_home(start_url):
        return ("*",)
    return tuple(dict.fromkeys(entry for url in (start_url, *also) for entry in _site_entries(url)))


def web_task(
    record: Record,
    suite: str,
    *,
    split: str,
    collection: str | None = None,
    gold: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Task:
    """A task from a WebVoyager-format record (`id`, `ques`, `web`; optional `web_name`, or the
    Mind2Web labels `domain`, `subdomain`, `website`).

    The id is `<suite>/<collection>/<id>` (`<suite>/<id>` without a collection); `query` is
    the raw question, the site goes to `start_url`.
    """
    ident, query, web = record.text("id"), record.text("ques"), record.url("web")
    labels = {name: record.get(name, str) for name in _LABEL_FIELDS if name in record.data}
    return Task(
        id="/".join(part for part in (suite, collection, ident) if part),
        suite=suite,
        site=urlsplit(web).hostname or "",
        start_url=web,
        query=query,
        split=split,
        allowed_hosts=allowed_hosts(web),
        gold=dict(gold or {}),
        meta={**labels, **(meta or {})},
    )


def load_task_file(path: str | Path, suite_name: str, *, split: str = "train") -> list[Task]:
    """Tasks from a user's WebVoyager-format file (JSONL, or a JSON array of the same objects).

    Each record needs `id`, `ques` and `web`; `web_name` (or the Mind2Web labels) are kept in
    `meta`. Ids become `<suite_name>/<id>` and must be unique within the file.
    """
    return build_tasks(read_records(path), lambda record: web_task(record, suite_name, split=split))
