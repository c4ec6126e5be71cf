"""Shared fixtures: tiny CPU-sized specs on the synthetic dataset."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bilateral.comparison import load_comparison
from bilateral.config import load_config
from bilateral.plan import build_plan
from bilateral.store import RunStore

REPO = Path(__file__).resolve().parents[1]
CIFAR10_JPG = REPO.parent / "shared" / "data" / "cifar10-jpg"
TINY = [
    "data.val_size=200",
    "data.train_subset=1000",
    "data.test_subset=400",
    "model.width=0.125",
    "model.dropout=0.1",
    "train.epochs=2",
    "train.batch_size=64",
    "train.eval_batch_size=500",
    "optim.lr=3e-3",
    "plan.pool_size=2",
    "plan.ensemble_top=[1,2]",
]


DATA_DIR = f"data_dir={REPO / 'data'}"


def sweep_cmd(out, *args: str, tiny: bool = True) -> list[str]:
    """`python launch/sweep.py` into out/t/; args come last, so they override the TINY defaults."""
    defaults = [*TINY, DATA_DIR] if tiny else [DATA_DIR]
    return [
        sys.executable,
        str(REPO / "launch" / "sweep.py"),
        "--out",
        str(out),
        "--name",
        "t",
        *defaults,
        *args,
    ]


def dry_run_ids(stdout: str) -> list[str]:
    """The run ids a --dry-run lists under its stages (the rows table above them is not runs)."""
    lines = stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    return [line.split()[0] for line in lines[first:] if line.startswith("  ")]


def navon_comparison(out: Path, experiment: str) -> pd.DataFrame:
    """A shipped comparison on navon (1 seed, 1 epoch) through the front door: its summary, which
    must hold a row for every row of the comparison."""
    args = ["--experiment", experiment, "--data", "navon", "--seeds", "0", "train.epochs=1"]
    proc = subprocess.run(sweep_cmd(out, *args), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(out / "summary.csv")
    assert {r.name for r in load_comparison(experiment).rows} <= set(summary["model"])
    return summary


def tiny_config(*overrides: str):
    cfg = load_config("smoke", overrides=["plan.seeds=[0]", *TINY, *overrides])
    cfg.data_dir = str(REPO / "data")
    return cfg


@pytest.fixture
def tiny_plan():
    def make(*overrides: str):
        return build_plan(tiny_config(*overrides))

    return make


class Killed(BaseException):
    """Stands in for SIGKILL right after a checkpoint was written."""


def die_after_first_epoch(monkeypatch, run_id: str | None = None):
    """Raise Killed right after the epoch-0 `last` checkpoint of run_id (of any run when None) is
    written; returns the function that undoes it."""
    save = RunStore.save_checkpoint

    def save_then_die(self, name, state):
        save(self, name, state)
        if name == "last" and state["epoch"] == 0 and run_id in (None, self.run_id):
            raise Killed

    monkeypatch.setattr(RunStore, "save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(RunStore, "save_checkpoint", save)
