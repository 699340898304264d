"""A static HTML trajectory viewer: one self-contained `index.html` (no server, no CDN).

Lists a run's trajectories with filters (round, stage, suite, verdict, source) and shows
each step's observation, thought, action and error side by side, with the ratings that
exist (the judge's verdict and reasoning, the gold reward); a trajectory neither rated is
shown as unrated. Synthetic trajectories' observations are the world model's
predicted pages (what the policy saw). Steps sampled with screenshots show the page as the
agent saw it; `copy_screenshots` copies those images into the report's folder, so the report
opens from disk with no access to the storage root. The page is the Jinja2 template
`templates/report.html.j2` (autoescaped), with its style and filter script beside it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from markupsafe import Markup

from evolver_core.contracts.text import html_templates
from evolver_core.data.records import rewarded
from evolver_core.data.storage import Storage
from evolver_core.judge.stored import verdict_row

log = logging.getLogger(__name__)

_FILTERS = ("round", "stage", "suite", "verdict", "source")

_PAGES = html_templates("evolver_core.reporting")


@dataclass(frozen=True)
class _Rating:
    """One rating of a trajectory as its summary line shows it: who rated (`judge`, `gold`),
    what they said, and whether it says success."""

    by: str
    said: str
    success: bool


@dataclass(frozen=True)
class _Shown:
    """One trajectory as the report shows it: its row, the row holding its verdict, its filter
    values (`data-*` attributes), the ratings that exist (none: unrated) and its steps in order."""

    row: Mapping
    judged: Mapping
    data: dict[str, str]
    ratings: list[_Rating]
    steps: list[Mapping]


def _ratings(t: Mapping, judged: Mapping) -> list[_Rating]:
    """The judge's verdict where the judge rated `t` (a judged copy, or a verdict in `t`'s own
    row), then the gold reward where the suite gave one."""
    out = []
    if judged is not t or judged["judge_verdict"] is not None:
        verdict = judged["judge_verdict"]
        out.append(_Rating("judge", {None: "unparsable", 0: "not-success", 1: "success"}[verdict], verdict == 1))
    if t["gold_reward"] is not None:
        out.append(_Rating("gold", f"{t['gold_reward']:g}", rewarded(t["gold_reward"])))
    return out


def _verdict(ratings: list[_Rating]) -> str:
    """The verdict filter's value: the gold reward's where there is one (the ground truth),
    else the judge's, else `unrated`."""
    by = {r.by: r for r in ratings}
    if "gold" in by:
        return "success" if by["gold"].success else "not-success"
    return by["judge"].said if "judge" in by else "unrated"


def copy_screenshots(storage: Storage, steps: Iterable[Mapping], target: Path) -> dict[str, str]:
    """Copy the steps' screenshots to `target/screenshots/`; returns URI -> path relative to `target`.

    A URI that is not found as stored (the root was moved or copied since) is looked up at the
    same place below the run in `storage`. An image found nowhere is logged and left out.
    """
    images: dict[str, str] = {}
    for s in steps:
        uri = s.get("screenshot")
        if not uri or uri in images:
            continue
        data = _read_screenshot(storage, uri, s["run_id"])
        if data is None:
            log.warning("screenshot %s not found; the report shows its step without it", uri)
            continue
        # Named by the URI's hash: flat, safe in any filesystem and URL, stable across reruns.
        name = f"screenshots/{hashlib.sha256(uri.encode()).hexdigest()[:16]}.png"
        (target / "screenshots").mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
        images[uri] = name
    return images


def _read_screenshot(storage: Storage, uri: str, run_id: str) -> bytes | None:
    below_run = uri.rsplit(f"/runs/{run_id}/", 1)
    candidates = [storage.fs._strip_protocol(uri)]
    if len(below_run) == 2:
        candidates.append(f"{storage.path(run_id)}/{below_run[1]}")
    for path in candidates:
        try:
            return storage.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
    return None


def render_report(run_id: str, trajectories: Iterable[Mapping], steps: Iterable[Mapping],
                  verdicts: Mapping[tuple[int, str, str], Mapping] | None = None,
                  images: Mapping[str, str] | None = None, success: Iterable[Mapping] = (), plot: str = "") -> str:
    """The report's HTML. It opens with `plot` (the success figure's SVG, `plots`) and `success`
    (rows of `compare.evaluation_table`: success by round and arm with 95% intervals), then
    lists the trajectories. `verdicts` maps
    (round, stage, trajectory_id) to a judged trajectory row (`judge_stage.split_judged`);
    `images` maps a step's screenshot URI to the image's path relative to the report
    (`copy_screenshots`)."""
    verdicts = verdicts or {}
    by_traj: dict[tuple, list[Mapping]] = {}
    for s in steps:
        by_traj.setdefault((s["round"], s["stage"], s["trajectory_id"]), []).append(s)
    ordered = sorted(trajectories, key=lambda t: (t["round"], t["stage"], t["trajectory_id"]))
    shown = [_shown(t, verdicts, by_traj) for t in ordered]
    options = {f: sorted({v.data[f] for v in shown}) for f in _FILTERS}
    return _PAGES.get_template("report.html.j2").render(
        run_id=run_id, success=list(success), options=options, trajectories=shown, images=images or {},
        plot=Markup(plot))  # our own matplotlib SVG: shown as markup, not text


def _shown(t: Mapping, verdicts: Mapping[tuple[int, str, str], Mapping],
           by_traj: Mapping[tuple, list[Mapping]]) -> _Shown:
    judged = verdict_row(t, verdicts)
    ratings = _ratings(t, judged)
    data = {"round": str(t["round"]), "stage": t["stage"], "suite": t["suite"], "verdict": _verdict(ratings),
            "source": t["source"]}
    steps = sorted(by_traj.get((t["round"], t["stage"], t["trajectory_id"]), []), key=lambda s: s["step"])
    return _Shown(t, judged, data, ratings, steps)
