"""launch/tune.py's search: each row of a comparison tuned by Ray Tune, rows in dependency order.

Per row, one Tune experiment: Optuna's TPE (ray.tune.search.optuna) proposes settings from the
search space, its first trial the row's own; ASHA stops trials that trail at its rungs. A trial is
a normal run of the tuning seeds (record, TensorBoard events, checkpoints) in <tuning>/runs/, and
reports its validation score each epoch; nothing of the test split is evaluated. A killed tuning
resumes with Tune's own experiment restore (Tuner.can_restore / Tuner.restore): finished trials
stay finished, and an unfinished one resumes its run from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bilateral.config import SweepConfig
from bilateral.errors import BilateralError
from bilateral.placement import Placement
from bilateral.plan import RunSpec
from bilateral.store import SweepStore, write_atomic, write_json
from bilateral.sweep import StageExecutor, run_sweep
from bilateral.tuning import report
from bilateral.tuning.rows import (
    choose,
    dependencies,
    own_runs,
    row_order,
    tuning_config,
    tuning_plan,
    with_chosen,
    write_tuned,
)
from bilateral.tuning.space import Budget, Dim, SearchSpace
from ray_jobs.backend import hide_gpus_unless_given

log = logging.getLogger(__name__)


class TuningError(BilateralError):
    """A row whose dependencies or trials failed: the runs' error.txt says why; a rerun resumes."""


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one row needs besides its settings."""

    cfg: SweepConfig  # the tuning config, with the settings chosen for earlier rows
    key: str  # the row: <model>/<backbone>
    seeds: list[int]
    root: str
    data_dir: str
    placement: Placement


def _trial(config: dict[str, Any], job: TrialJob) -> None:
    """One trial: the row's runs on the tuning seeds under `config`, trained as one fused network
    where they fuse (its score is their mean), reporting the validation score each epoch."""
    import torch
    from ray import tune

    from bilateral.training import run, run_group

    hide_gpus_unless_given(job.placement)
    torch.set_num_threads(min(job.placement.threads, os.cpu_count() or 1))
    cfg = job.cfg
    specs = own_runs(tuning_plan(cfg, {**cfg.tuned.rows, job.key: dict(config)}), job.key, job.seeds)
    store = SweepStore(job.root)
    ids = ",".join(s.run_id for s in specs)

    epochs = specs[0].train.epochs

    def report_epoch(row: dict) -> None:
        # The last epoch is reported once the records are written: ASHA may stop a trial at any
        # report, and a trial stopped at its last epoch would leave its runs without a record.
        if "val_score" in row and row["epoch"] + 1 < epochs:  # an epoch without validation has none
            tune.report({"epoch": row["epoch"] + 1, "val_score": row["val_score"], "run_ids": ids})

    fused = len(specs) == 1 or specs[0].fusion_key is not None
    finished = all(store.run(s.run_id).is_finished() for s in specs)
    if fused and not finished:
        run_group(specs, store, job.placement.device, job.data_dir, report_epoch, job.placement)
    else:  # runs that never fuse train one after the other and report at the end; a finished
        for spec in specs:  # trial that a restore started again only reports
            run(spec, store, job.placement.device, job.data_dir, placement=job.placement)
        for row in replayed(specs, store)[:-1]:
            report_epoch(row)
    last = replayed(specs, store)[-1]
    tune.report({"epoch": last["epoch"] + 1, "val_score": last["val_score"], "run_ids": ids})


def replayed(specs: list[RunSpec], store: SweepStore) -> list[dict]:
    """Each epoch's mean validation score over the runs, from their metrics.jsonl."""
    rows = pd.DataFrame([r for s in specs for r in store.run(s.run_id).read_metrics() if "val_score" in r])
    if rows.empty:
        return []
    means = rows.groupby("epoch")["val_score"].mean()
    return [{"epoch": int(epoch), "val_score": float(score)} for epoch, score in means.items()]


def _domain(dim: Dim, value: float):
    from ray import tune

    low, high = dim.bounds(value)
    if dim.integer:
        return (tune.lograndint if dim.log else tune.randint)(int(low), int(high) + 1)
    return (tune.loguniform if dim.log else tune.uniform)(low, high)


def search_space(space: SearchSpace, spec: RunSpec) -> tuple[dict, dict]:
    """Tune's param_space for a row and its own settings (Optuna's first point, when in range)."""
    dims = space.for_run(spec)
    own = {key: value for key, (dim, value) in dims.items() if _inside(dim, value)}
    return {key: _domain(dim, value) for key, (dim, value) in dims.items()}, own


def _inside(dim: Dim, value: float) -> bool:
    low, high = dim.bounds(value)
    return low <= value <= high


def slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _trial_name(trial) -> str:
    return trial.trial_id


def tune_row(
    job: TrialJob, space: SearchSpace, budget: Budget, resources: dict, max_failures: int
) -> pd.DataFrame:
    """Run (or resume) the row's Tune experiment; one line per trial."""
    import optuna
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    spec = own_runs(tuning_plan(job.cfg, job.cfg.tuned.rows), job.key, job.seeds)[0]
    epochs = spec.train.epochs
    param_space, own = search_space(space, spec)
    storage = Path(job.root).resolve() / "tune"
    path = storage / slug(job.key)
    trainable = tune.with_resources(tune.with_parameters(_trial, job=job), resources)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # each run writes its own TensorBoard events
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "1"  # the experiment's state a kill leaves behind is fresh
    if tune.Tuner.can_restore(path):
        log.info("%s: resuming the Tune experiment in %s", job.key, path)
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, restart_errored=True)
    else:
        sampler = optuna.samplers.TPESampler(n_startup_trials=budget.startup, seed=budget.seeds[0])
        searcher = OptunaSearch(
            points_to_evaluate=[own] if len(own) == len(param_space) else None, sampler=sampler
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="val_score",
                mode="max",
                search_alg=searcher,
                scheduler=ASHAScheduler(
                    time_attr="epoch",
                    max_t=epochs,
                    grace_period=min(budget.grace, epochs),
                    reduction_factor=budget.eta,
                ),
                num_samples=budget.trials,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=path.name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=1,
                callbacks=[CSVLoggerCallback(), JsonLoggerCallback()],
            ),
        )
    results = tuner.fit()
    return trials_table(results, job.key, list(param_space), epochs)


def trials_table(results, key: str, params: list[str], epochs: int) -> pd.DataFrame:
    """One line per trial: its settings, epochs trained, best and last validation score, runs."""
    lines = []
    for number, result in enumerate(results, 1):  # in the order Tune created the trials
        history = result.metrics_dataframe
        scored = (
            history[history["val_score"].notna()] if history is not None and "val_score" in history else None
        )
        trained = int(scored["epoch"].max()) if scored is not None and len(scored) else 0
        trial_id = Path(result.path).name
        lines.append(
            {
                "row": key,
                "trial": number,
                "trial_id": trial_id,
                **{p: result.config.get(p) for p in params},
                "epochs": epochs,
                "epochs_trained": trained,
                "stopped_early": 0 < trained < epochs,
                "val_score": float(scored["val_score"].max()) if trained else np.nan,
                "val_score_last": float(scored["val_score"].iloc[-1]) if trained else np.nan,
                "error": "" if result.error is None else f"{type(result.error).__name__}: {result.error}",
                "run_ids": str(scored["run_ids"].iloc[-1]) if trained and "run_ids" in scored else "",
                "settings": json.dumps({p: result.config.get(p) for p in params}),
            }
        )
    return pd.DataFrame(lines).sort_values("trial").reset_index(drop=True)


def tune_comparison(
    cfg: SweepConfig,
    space: SearchSpace,
    budget: Budget,
    root: Path,
    placement: Placement,
    resources: dict,
    train_runs: StageExecutor,
    about: str,
    max_failures: int = 2,
) -> Path:
    """Tune every row the comparison trains, each with `budget`, rows a run depends on first;
    write <root>/tuned.yaml (each row's chosen settings), trials.csv and report.md; return tuned.yaml.
    Rows chosen by an earlier call are kept (choices.json), so a rerun resumes where it stopped."""
    base = tuning_config(cfg, budget)
    seeds = list(budget.seeds)
    store = SweepStore(root)
    choices_file = root / "choices.json"
    choices: dict[str, dict] = json.loads(choices_file.read_text()) if choices_file.is_file() else {}
    keys = row_order(tuning_plan(base, {}), seeds)
    log.info("tuning %d row(s), %s: %s", len(keys), budget.describe(), ", ".join(keys))
    for key in keys:
        if key in choices:
            continue
        chosen = {k: c["settings"] for k, c in choices.items()}
        plan = tuning_plan(base, chosen)
        failed = run_sweep(dependencies(plan, own_runs(plan, key, seeds)), store, train_runs)
        if failed:
            raise TuningError(f"{key}: the runs it depends on failed ({', '.join(failed)}); fix and rerun")
        job = TrialJob(with_chosen(base, chosen), key, seeds, str(root.resolve()), base.data_dir, placement)
        table = tune_row(job, space, budget, resources, max_failures)
        write_atomic(root / "trials" / f"{slug(key)}.csv", table.to_csv(index=False).encode())
        best = choose(table, int(table["epochs"].iloc[0]))
        choices[key] = {"settings": json.loads(best["settings"]), "trial": int(best["trial"])}
        write_json(choices_file, choices)
        log.info(
            "%s: chose trial %d, %s (validation %.4f)",
            key,
            best["trial"],
            best["settings"],
            best["val_score"],
        )
    trials = pd.concat([pd.read_csv(root / "trials" / f"{slug(k)}.csv") for k in keys], ignore_index=True)
    write_atomic(root / "trials.csv", trials.to_csv(index=False).encode())
    path = root / "tuned.yaml"
    write_tuned(path, {k: choices[k]["settings"] for k in keys}, seeds, about)
    report.write(root, trials, {k: choices[k] for k in keys}, space, budget, about)
    return path
