"""The rows a tuning searches, in dependency order, and what it writes: tuned.yaml and trials.csv.

A row is tuned after the rows its runs depend on, on runs of those rows trained with their chosen
settings (a specialised net's heads on hemispheres trained as tuned). Tuning runs are normal runs
of the tuning seeds that never evaluate the test split (train.evaluate_test=false): the test set
chooses nothing and is not even looked at.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bilateral.config import SweepConfig, TunedConfig, with_settings
from bilateral.errors import ConfigError
from bilateral.plan import Plan, RunSpec, build_plan
from bilateral.store import write_atomic
from bilateral.tuning.space import Budget
from bilateral.tuning.tuned import row_key

TUNING_SOURCE = "launch/tune.py (a trial)"  # the provenance of settings inside the tuning itself


def tuning_config(cfg: SweepConfig, budget: Budget) -> SweepConfig:
    """The sweep's config as tuning trains it: the tuning seeds, no test split, no tuned rows."""
    cfg = with_settings(cfg, {"train.evaluate_test": False}, "tuning")
    plan = dataclasses.replace(cfg.plan, seeds=list(budget.seeds))
    return dataclasses.replace(cfg, plan=plan, tuned=TunedConfig())


def with_chosen(cfg: SweepConfig, rows: dict[str, dict[str, Any]]) -> SweepConfig:
    return dataclasses.replace(cfg, tuned=TunedConfig(source=TUNING_SOURCE, rows=dict(rows)))


def own_runs(plan: Plan, key: str, seeds: list[int]) -> list[RunSpec]:
    """The runs a trial of row `key` trains: the row's run on each tuning seed (pool member 0)."""
    return [s for s in plan.runs if s.trains and row_key(s) == key and s.seed in seeds and s.member == 0]


def row_order(plan: Plan, seeds: list[int]) -> list[str]:
    """Every row the plan trains on the tuning seeds, rows a run depends on first (plan order)."""
    keys = [row_key(s) for s in plan.runs if s.trains and s.seed in seeds and s.member == 0]
    return list(dict.fromkeys(keys))


def dependencies(plan: Plan, specs: list[RunSpec]) -> Plan:
    """The runs `specs` depend on, directly or not, in the plan's stages."""
    by_id = {s.run_id: s for s in plan.runs}
    needed: set[str] = set()
    todo = [d for s in specs for d in s.depends_on]
    while todo:
        run_id = todo.pop()
        if run_id not in needed:
            needed.add(run_id)
            todo += by_id[run_id].depends_on
    stages = [[s for s in stage if s.run_id in needed] for stage in plan.stages]
    return Plan([stage for stage in stages if stage])


def tuning_plan(cfg: SweepConfig, chosen: dict[str, dict[str, Any]]) -> Plan:
    return build_plan(with_chosen(cfg, chosen))


def choose(trials: pd.DataFrame, epochs: int) -> pd.Series:
    """The trial whose runs reached the row's full epochs with the best validation score (at their
    best epoch, the checkpoint a sweep keeps); ties go to the earlier trial."""
    done = trials[(trials["epochs_trained"] >= epochs) & trials["val_score"].notna()]
    if done.empty:
        raise ConfigError(
            f"no trial of row {trials['row'].iloc[0]!r} trained its {epochs} epochs: see the errors in "
            "trials.csv and the runs' error.txt, fix, and rerun the same command"
        )
    return done.sort_values(["val_score", "trial"], ascending=[False, True]).iloc[0]


def write_tuned(path: Path, chosen: dict[str, dict[str, Any]], seeds: list[int], about: str) -> None:
    """tuned.yaml: a config file (`launch/sweep.py --config tuned.yaml`) of each row's chosen settings."""
    body = {"tuned": {"source": str(path), "seeds": list(seeds), "rows": chosen}}
    header = "".join(f"# {line}\n" for line in about.splitlines())
    write_atomic(path, (header + yaml.safe_dump(body, sort_keys=False)).encode())
