"""Walk a plan's stages in dependency order with any executor; rerunning a sweep redoes only
unfinished runs, because a finished run (record.json present) is never scheduled again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bilateral import progress
from bilateral.claims import Claims
from bilateral.errors import CheckpointError, ConfigError, DamagedFileError, DiskFullError, describe_failure
from bilateral.placement import Placement
from bilateral.plan import Plan, RunSpec, group_name
from bilateral.store import SweepStore
from bilateral.training import run_group

log = logging.getLogger(__name__)

# Runs the given specs (in any order or in parallel) and returns {run_id: error text} for those that failed.
# An executor may split them into the groups it trains together (`groups(specs)`, default one group
# of all): the runs a sweep claims at a time (bilateral.claims).
StageExecutor = Callable[[list[RunSpec]], dict[str, str]]
WAIT_S = 5.0  # how often a sweep looks again at runs another sweep on its directory is training


def run_sweep(plan: Plan, store: SweepStore, execute: StageExecutor) -> dict[str, str]:
    """Run every unfinished run of the plan; returns {run_id: error} of runs that failed or were blocked."""
    failed: dict[str, str] = damaged_records(plan, store)
    claims = Claims(store)
    for number, stage in enumerate(plan.stages, 1):
        todo = [s for s in stage if not store.run(s.run_id).is_finished()]
        blocked = {
            s.run_id: f"not run: depends on {d}, which failed or is damaged"
            for s in todo
            for d in s.depends_on
            if d in failed
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
            failed.update(run_claimed(todo, store, claims, execute))
    return failed


def run_claimed(
    todo: list[RunSpec], store: SweepStore, claims: Claims, execute: StageExecutor
) -> dict[str, str]:
    """Execute the runs of a stage that this sweep claims, a batch at a time; wait for those another
    sweep on this directory claimed, and take over any it leaves unfinished (it stopped or crashed)."""
    failed: dict[str, str] = {}
    said = ""
    split = getattr(execute, "groups", lambda specs: [specs])
    while todo := [s for s in todo if s.run_id not in failed and not store.run(s.run_id).is_finished()]:
        mine = next((taken for group in split(todo) if (taken := claims.take(group))), [])
        if mine:
            try:
                failed.update(execute(mine))
            finally:
                claims.release(mine)
            failed.update(  # never trained again in this sweep: it would loop
                {
                    s.run_id: f"{s.run_id} ended without a record or an error; rerun to retry it"
                    for s in mine
                    if s.run_id not in failed and not store.run(s.run_id).is_finished()
                }
            )
            continue
        holders = claims.holders(todo)
        if holders != said:
            log.info(
                "waiting for %d run(s) that another sweep on this directory is training (%s): %s; this "
                "sweep goes on when they finish, and trains any that sweep leaves unfinished",
                len(todo),
                holders,
                ", ".join(s.run_id for s in todo),
            )
            said = holders
        time.sleep(WAIT_S)
    return failed


def damaged_records(plan: Plan, store: SweepStore) -> dict[str, str]:
    """{run_id: what is wrong} of the plan's runs whose record.json exists but cannot be read: they
    are not retrained (the fix is the user's to choose), and the runs that depend on them wait."""
    damaged = {}
    for spec in plan.runs:
        run = store.run(spec.run_id)
        if run.is_finished():
            try:
                run.read_record()
            except DamagedFileError as exc:
                damaged[spec.run_id] = str(exc)
                log.error("%s", exc)
    return damaged


def check_one_configuration(plan: Plan, store: SweepStore) -> None:
    """Refuse a plan whose runs would share a sweep directory with finished runs of the same row,
    seed and pool member trained under other settings: the table would pool both as seeds of one
    row. (Extending seeds or rows keeps every run id, so it passes.)"""
    if not store.root.is_dir():
        return
    records, _ = store.read_records()
    finished = {(r["model"], r["backbone"], r["seed"], r["member"]): r for r in records}
    clashes = [
        (spec, finished[key])
        for spec in plan.runs
        if (key := (spec.model_name, spec.backbone_name, spec.seed, spec.member)) in finished
        and finished[key]["run_id"] != spec.run_id
    ]
    if not clashes:
        return
    spec, old = clashes[0]
    before = "data.pairing=run (trained before paired data orders), " if _unpaired(old) else ""
    raise ConfigError(
        f"{store.root} already holds {len(clashes)} finished run(s) of this sweep's rows trained under "
        f"other settings (e.g. {old['run_id']}, where this sweep would train {spec.run_id}); one table "
        f"would pool them as seeds of one row. Fix: pass another --name, or rerun with the settings "
        f"those runs had ({before}see {store.root / 'sweep.json'}), or delete {store.root}"
    )


def _unpaired(record: dict) -> bool:
    return "pairing" not in record.get("spec", {}).get("data", {})


def fusion_groups(specs: list[RunSpec], k: int, store: SweepStore) -> list[list[RunSpec]]:
    """The specs in groups of at most k that train as one fused network (bilateral.training.run_group):
    same RunSpec.fusion_key and the same last checkpoint epoch, so that a group resumes together.
    k = 1, and runs that never fuse (ensembles), give groups of one."""
    buckets: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        if k <= 1 or spec.fusion_key is None:
            buckets[(spec.run_id,)] = [spec]
        else:
            try:
                key = (spec.fusion_key, store.run(spec.run_id).checkpoint_epoch("last"))
            except CheckpointError:  # the run fails alone, with this error, when it loads the file
                key = (spec.run_id,)
            buckets.setdefault(key, []).append(spec)
    return [members[i : i + k] for members in buckets.values() for i in range(0, len(members), max(k, 1))]


class InProcessExecutor:
    """Runs specs one after another in this process (fused in groups of `fuse`): the local backend
    and the debug mode."""

    def __init__(
        self,
        store: SweepStore,
        plan: Plan,
        device: str = "auto",
        data_dir: str = "data",
        fuse: int = 1,
        placement: Placement | None = None,
    ):
        self.store, self.device, self.data_dir, self.fuse = store, device, data_dir, fuse
        self.placement = placement
        finished = sum(store.run(s.run_id).is_finished() for s in plan.runs)
        self.done, self.total = finished, len(plan.runs)
        self.progress = progress.bar(total=self.total, initial=finished, desc="runs done", unit="run")

    def groups(self, specs: list[RunSpec]) -> list[list[RunSpec]]:
        """The fused groups it trains, claimed one at a time, so that a second sweep takes the next."""
        return fusion_groups(specs, self.fuse, self.store)

    def __call__(self, specs: list[RunSpec]) -> dict[str, str]:
        failed = {}
        for group in self.groups(specs):
            self.progress.set_postfix_str(group_name(group))
            failed.update(run_logged(group, self.store, self.device, self.data_dir, placement=self.placement))
            self.progress.update(len(group))
            self.done += len(group)
            if not progress.interactive():  # piped: a line instead of the bar
                log.info("runs done %d/%d", self.done, self.total)
        return failed


def run_logged(
    group: list[RunSpec],
    store: SweepStore,
    device: str,
    data_dir: str,
    write_errors: bool = True,
    placement: Placement | None = None,
) -> dict[str, str]:
    """run_group with each finished run logged; a failure is returned as {run_id: error} (and, when
    write_errors, kept in each member's error.txt) instead of raised, so that it loses no other run.
    A full disk is raised: no later run could write either."""
    try:
        records = run_group(group, store, device=device, data_dir=data_dir, placement=placement)
    except Exception as exc:
        error = describe_failure(exc)
        log.error("run %s failed:\n%s", group_name(group), error)
        if write_errors:
            try:
                for spec in group:
                    store.run(spec.run_id).write_error(error)
            except DiskFullError as full:
                log.error("could not keep the error in error.txt: %s", full)
        if isinstance(exc, DiskFullError):
            raise  # every later run would fail the same way: stop, with what is written kept
        return {spec.run_id: error for spec in group}
    for record in records:
        log.info(
            "finished %s: test fine %.4f coarse %.4f",
            record["run_id"],
            record.get("test_acc_fine", float("nan")),
            record.get("test_acc_coarse", float("nan")),
        )
    return {}
