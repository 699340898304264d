"""`webevolver show`: stored trajectories as readable text."""

from __future__ import annotations

from typing import Optional

from rich.markup import escape

from cli.output import console


def render_run(root: str, run: str, *, trajectory: Optional[str], round_: Optional[int], stage: Optional[str],
               limit: int) -> None:
    from evolver_core.data.storage import Storage
    from evolver_core.judge.stored import split_judged, verdict_row

    store = Storage(root)
    if run not in store.list_runs():
        known = ", ".join(store.list_runs()) or "none"
        raise SystemExit(f"no run {run!r} under {store.uri()}; runs there: {known}")
    def wanted(row: dict) -> bool:
        return (round_ is None or row["round"] == round_) and (stage is None or row["stage"] == stage)

    # The judge stage holds judged copies of trajectory rows (no steps): shown as verdicts.
    trajs, broken = store.read_table_checked(run, table_name="trajectories")
    steps, broken_steps = store.read_table_checked(run, table_name="steps")
    for uri in broken + broken_steps:
        console.print(f"skipped unreadable file {uri}", markup=False)
    trajs, verdicts = split_judged(trajs.to_pylist())
    trajs = [t for t in trajs if wanted(t)]
    steps = [s for s in steps.to_pylist() if wanted(s)]
    if trajectory:
        trajs = [t for t in trajs if t["trajectory_id"] == trajectory]
        if not trajs:
            raise SystemExit(f"no trajectory {trajectory!r} in run {run}")
    trajs.sort(key=lambda t: (t["round"], t["stage"], t["trajectory_id"]))
    for t in trajs[:limit]:
        console.rule(f"{t['trajectory_id']}  (round {t['round']}, {t['stage']}, {t['source']})")
        console.print(f"[bold]Task:[/bold] {escape(t['query'])}", markup=True)
        mine = sorted((s for s in steps if s["trajectory_id"] == t["trajectory_id"] and s["round"] == t["round"]
                       and s["stage"] == t["stage"]), key=lambda s: s["step"])
        for s in mine:
            console.print(f"[bold cyan]Step {s['step']}[/bold cyan]  {escape(s['url'])}", markup=True)
            console.print(s["observation"], markup=False)
            console.print(f"[green]Thought:[/green] {escape(s['thought'] or '')}", markup=True)
            invalid = "" if s["action_valid"] else "  (invalid)"
            console.print(f"[green]Action:[/green] {escape(s['action_raw'])}{invalid}", markup=True)
            if s["error"]:
                console.print(f"[red]Error:[/red] {escape(s['error'])}", markup=True)
        judged = verdict_row(t, verdicts)
        verdict = {None: "n/a", 0: "NOT SUCCESS", 1: "SUCCESS"}[judged["judge_verdict"]]
        if judged["judge_reasoning"]:
            console.print(f"[bold]Judge:[/bold] {escape(judged['judge_reasoning'][:500])}", markup=True)
        gold = "n/a" if t["gold_reward"] is None else f"{t['gold_reward']:g}"
        console.print(f"[bold]End:[/bold] {t['stop_reason']}; answer {escape(repr(t['final_answer']))}; "
                      f"judge {verdict}; gold reward {gold}", markup=True)
    if len(trajs) > limit:
        console.print(f"... {len(trajs) - limit} more (use --limit or --trajectory)")
