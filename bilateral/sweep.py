"""Walk a plan's stages in dependency order with any executor; rerunning a sweep redoes only
unfinished runs, because a finished run (record.json present) is never scheduled again."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from tqdm import tqdm

from bilateral.errors import BilateralError
from bilateral.experiment import Plan, RunSpec
from bilateral.store import SweepStore
from bilateral.train import run

log = logging.getLogger(__name__)

# Runs the given specs (in any order or in parallel) and returns {run_id: error text} for those that failed.
StageExecutor = Callable[[list[RunSpec]], dict[str, str]]


def run_sweep(plan: Plan, store: SweepStore, execute: StageExecutor) -> dict[str, str]:
    """Run every unfinished run of the plan; returns {run_id: error} of runs that failed or were blocked."""
    failed: dict[str, str] = {}
    for number, stage in enumerate(plan.stages, 1):
        todo = [s for s in stage if not store.run(s.run_id).is_finished()]
        blocked = {
            s.run_id: f"not run: depends on failed {d}" for s in todo for d in s.depends_on if d in failed
        }
        failed.update(blocked)
        todo = [s for s in todo if s.run_id not in blocked]
        log.info(
            "stage %d/%d: %d runs, %d finished earlier, %d to run, %d blocked",
            number,
            len(plan.stages),
            len(stage),
            len(stage) - len(todo) - len(blocked),
            len(todo),
            len(blocked),
        )
        if todo:
            failed.update(execute(todo))
    return failed


def describe_failure(exc: BaseException) -> str:
    """A user error is its message; anything else keeps its traceback for the run's error.txt."""
    if isinstance(exc, BilateralError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(exc))


class InProcessExecutor:
    """Runs specs one after another in this process: the local backend and the debug mode."""

    def __init__(self, store: SweepStore, plan: Plan, device: str = "auto", data_dir: str = "data"):
        self.store, self.device, self.data_dir = store, device, data_dir
        finished = sum(store.run(s.run_id).is_finished() for s in plan.runs)
        self.progress = tqdm(
            total=len(plan.runs), initial=finished, desc="runs done", unit="run", dynamic_ncols=True
        )

    def __call__(self, specs: list[RunSpec]) -> dict[str, str]:
        failed = {}
        for spec in specs:
            self.progress.set_postfix_str(spec.run_id)
            try:
                record = run(spec, self.store, device=self.device, data_dir=self.data_dir)
                log.info(
                    "finished %s: test fine %.4f coarse %.4f",
                    spec.run_id,
                    record.get("test_acc_fine", float("nan")),
                    record.get("test_acc_coarse", float("nan")),
                )
            except Exception as exc:  # one broken run must not lose the others
                failed[spec.run_id] = describe_failure(exc)
                self.store.run(spec.run_id).write_error(failed[spec.run_id])
                log.error("run %s failed:\n%s", spec.run_id, failed[spec.run_id])
            self.progress.update()
        return failed
