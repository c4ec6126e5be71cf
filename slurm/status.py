"""`python launch/sweep.py --status results/<sweep>`: where a sweep stands, from its run directories and,
for a sweep run on Slurm, from the jobs recorded in <sweep>/slurm/jobs.json (squeue, then sacct)."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

from bilateral.errors import BilateralError, DamagedFileError
from bilateral.kinds import kind_of
from bilateral.store import SweepStore
from slurm.backend import ACTIVE, QUEUED, Ledger, accounting_states, queue_states

ORDER = ("finished", "running", "queued", "failed", "damaged", "interrupted", "cancelled", "not started")


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Live state of each job: squeue for queued/running ones, sacct (accounting) for ended ones."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    states = {}
    try:
        states.update(accounting_states(job_ids))
        states.update(queue_states())  # fresher than sacct for jobs still in the queue
    except BilateralError:
        pass
    return {j: states[j] for j in job_ids if j in states}


def run_state(run, slurm_state: str | None) -> str:
    if run.is_finished():
        return "finished"
    if slurm_state:
        word = slurm_state.split()[0]
        if word in ACTIVE:
            return "queued" if word in QUEUED else "running"
    if run.path("error.txt").is_file():
        return "failed"
    if slurm_state and slurm_state.split()[0] not in ("COMPLETED", "UNKNOWN"):
        return slurm_state.split()[0].lower()  # cancelled, timeout, node_fail, out_of_memory, ...
    if run.has_checkpoint("last"):
        return "interrupted"
    return "not started"


def status(sweep_dir: str | Path) -> str:
    root = Path(sweep_dir)
    plan_file = root / "sweep.json"
    if not plan_file.is_file():
        raise BilateralError(f"{root} is not a sweep directory (no sweep.json): give results/<sweep>")
    store = SweepStore(root)
    run_ids = json.loads(plan_file.read_text())["runs"]
    ledger = Ledger(store)
    jobs = {r: entry["job"] for r in run_ids if (entry := ledger.job_of(r))}
    live = slurm_states(sorted(set(jobs.values())))

    rows, counts, failures = [], collections.Counter(), []
    for run_id in run_ids:
        run = store.run(run_id)
        job = jobs.get(run_id)
        state = run_state(run, live.get(job))
        try:
            spec = run.read_spec() if run.path("spec.json").is_file() else {}
            done = len(run.read_metrics())
            if state == "finished":
                run.read_record()
        except DamagedFileError as exc:
            state, spec, done = "damaged", {}, 0
            failures.append(f"  {run_id}: {exc}")
        counts[state] += 1
        trains = "kind" in spec and kind_of(spec["kind"], spec.get("plugin", "")).trains
        total = spec.get("train", {}).get("epochs") if trains else None
        epochs = f"{done}/{total}" if total else "-"
        slurm = f"{job} {live.get(job, '?')}" if job else ""
        rows.append((run_id, state, epochs, slurm))
        if state == "failed":
            lines = run.path("error.txt").read_text().strip().splitlines() or ["(empty error.txt)"]
            failures.append(f"  {run_id}: {next(x for x in reversed(lines) if not x.startswith('('))}")

    width = max(len(r[0]) for r in rows) if rows else 10
    out = [
        f"sweep {root.name} ({root.resolve()}): {len(run_ids)} runs",
        "  " + ", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s]),
        "",
        f"{'run':<{width}}  {'state':<12} {'epochs':<7} slurm job",
    ]
    out += [f"{r:<{width}}  {s:<12} {e:<7} {j}".rstrip() for r, s, e, j in rows]
    if failures:
        out += ["", "failed or damaged (full traceback in runs/<run>/error.txt):", *failures]
    if counts["finished"] == len(run_ids):
        out += ["", f"all runs finished: python launch/aggregate.py {root}"]
    elif not (counts["running"] or counts["queued"]):
        out += ["", "nothing is queued or running: rerun the sweep command to run what is unfinished"]
    return "\n".join(out)
