"""A static HTML trajectory viewer: one self-contained `index.html` (no server, no CDN).

Lists a run's trajectories with filters (round, stage, suite, verdict, source) and shows
each step's observation, thought, action and error side by side, with the judge's
reasoning and the gold reward. Synthetic trajectories' observations are the world model's
predicted pages (what the policy saw). Steps sampled with screenshots show the page as the
agent saw it; `copy_screenshots` copies those images into the report's folder, so the report
opens from disk with no access to the storage root.
"""

from __future__ import annotations

import hashlib
import json
import logging
from html import escape
from pathlib import Path
from typing import Iterable, Mapping

from evolver_core.data.storage import Storage
from evolver_core.judge.stored import verdict_row

log = logging.getLogger(__name__)

_FILTERS = ("round", "stage", "suite", "verdict", "source")

_SCRIPT = """
const rows = Array.from(document.querySelectorAll('details.traj'));
function apply() {
  const want = {};
  document.querySelectorAll('select.filter').forEach(s => { if (s.value) want[s.name] = s.value; });
  let shown = 0;
  rows.forEach(r => {
    const ok = Object.entries(want).every(([k, v]) => r.dataset[k] === v);
    r.style.display = ok ? '' : 'none';
    shown += ok;
  });
  document.getElementById('count').textContent = shown + ' of ' + rows.length + ' trajectories';
}
document.querySelectorAll('select.filter').forEach(s => s.addEventListener('change', apply));
apply();
"""

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
details.traj { border: 1px solid #ccc; border-radius: 4px; margin: .5em 0; padding: .3em .6em; }
summary { cursor: pointer; }
.step { display: grid; grid-template-columns: 3fr 2fr; gap: 1em; border-top: 1px solid #eee; padding: .5em 0; }
pre { white-space: pre-wrap; font-size: 11px; max-height: 24em; overflow: auto; background: #f7f7f7; margin: 0; }
.ok { color: #166534; } .bad { color: #991b1b; } .err { color: #b91c1c; }
img.shot { width: 100%; border: 1px solid #ccc; }
"""


def _verdict(v: int | None) -> str:
    return {None: "unjudged", 0: "not-success", 1: "success"}[v]


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


def _screenshot_html(step: Mapping, images: Mapping[str, str]) -> str:
    uri = step.get("screenshot")
    if not uri:
        return ""
    if uri not in images:
        return f"<p class='err'>screenshot not found: {escape(uri)}</p>"
    src = escape(images[uri])
    return (f"<a href='{src}' target='_blank'><img class='shot' src='{src}' loading='lazy' "
            f"alt='the page at step {step['step']}'></a>")


def _success_table(rows: Iterable[Mapping]) -> str:
    rows = list(rows)
    if not rows:
        return ""
    cells = "".join(f"<tr><td>{r['round']}</td><td>{escape(r['arm'])}</td><td>{escape(r['suite'])}</td>"
                    f"<td>{r['episodes']}</td><td>{100 * r['success_rate']:.1f}%</td>"
                    f"<td>{100 * r['ci_low']:.1f}%-{100 * r['ci_high']:.1f}%</td></tr>" for r in rows)
    return ("<h2>Test success by round and arm</h2><table id='success'><tr><th>round</th><th>arm</th><th>suite</th>"
            f"<th>episodes</th><th>success</th><th>95% CI</th></tr>{cells}</table>")


def render_report(run_id: str, trajectories: Iterable[Mapping], steps: Iterable[Mapping],
                  verdicts: Mapping[tuple[int, str, str], Mapping] | None = None,
                  images: Mapping[str, str] | None = None, success: Iterable[Mapping] = ()) -> str:
    """The report's HTML. It opens with `success` (rows of `compare.evaluation_table`: success
    by round and arm with 95% intervals), then lists the trajectories. `verdicts` maps
    (round, stage, trajectory_id) to a judged trajectory row (`judge_stage.split_judged`);
    `images` maps a step's screenshot URI to the image's path relative to the report
    (`copy_screenshots`)."""
    verdicts = verdicts or {}
    images = images or {}
    by_traj: dict[tuple, list[Mapping]] = {}
    for s in steps:
        by_traj.setdefault((s["round"], s["stage"], s["trajectory_id"]), []).append(s)
    trajs = sorted(trajectories, key=lambda t: (t["round"], t["stage"], t["trajectory_id"]))
    options: dict[str, set[str]] = {f: set() for f in _FILTERS}
    blocks = []
    for t in trajs:
        judged = verdict_row(t, verdicts)
        data = {"round": str(t["round"]), "stage": t["stage"], "suite": t["suite"],
                "verdict": _verdict(judged["judge_verdict"]), "source": t["source"]}
        for k, v in data.items():
            options[k].add(v)
        attrs = " ".join(f'data-{k}="{escape(v)}"' for k, v in data.items())
        gold = "n/a" if t["gold_reward"] is None else f"{t['gold_reward']:g}"
        head = (f"<b>{escape(t['trajectory_id'])}</b> · round {t['round']} · {escape(t['stage'])} · "
                f"{escape(t['source'])} · {t['n_steps']} steps · {escape(t['stop_reason'])} · judge "
                f"<span class='{'ok' if judged['judge_verdict'] == 1 else 'bad'}'>{data['verdict']}</span> · gold {gold}")
        body = [f"<p><b>Task:</b> {escape(t['query'])}<br><b>Answer:</b> {escape(str(t['final_answer']))}</p>"]
        if t.get("error"):
            body.append(f"<p class='err'><b>Episode error (not scored):</b> {escape(t['error'])}</p>")
        if judged.get("judge_reasoning"):
            body.append(f"<p><b>Judge:</b> {escape(judged['judge_reasoning'])}</p>")
        for s in sorted(by_traj.get((t["round"], t["stage"], t["trajectory_id"]), []), key=lambda s: s["step"]):
            err = f"<p class='err'><b>Error:</b> {escape(s['error'])}</p>" if s["error"] else ""
            body.append(f"<div class='step'><div><b>Step {s['step']}</b> {escape(s['url'])}"
                        f"<pre>{escape(s['observation'])}</pre></div><div>{_screenshot_html(s, images)}"
                        f"<p><b>Thought:</b> {escape(s['thought'] or '')}</p>"
                        f"<p><b>Action:</b> <code>{escape(s['action_raw'])}</code>"
                        f"{'' if s['action_valid'] else ' (invalid)'}</p>{err}</div></div>")
        blocks.append(f"<details class='traj' {attrs}><summary>{head}</summary>{''.join(body)}</details>")
    selects = "".join(
        f"<label>{f} <select class='filter' name='{f}'><option value=''>all</option>"
        + "".join(f"<option>{escape(v)}</option>" for v in sorted(options[f])) + "</select></label> "
        for f in _FILTERS)
    meta = json.dumps({"run": run_id, "trajectories": len(trajs)})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>WebEvolver run {escape(run_id)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>Run {escape(run_id)}</h1>{_success_table(success)}<p>{selects}</p>"
            f"<p id='count'></p>{''.join(blocks)}<script type='application/json' id='meta'>{meta}</script>"
            f"<script>{_SCRIPT}</script></body></html>\n")
