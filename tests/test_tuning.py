"""Tuning every row with the same budget (launch/tune.py, bilateral/tuning, ray_jobs/tune.py): what a
sweep reads of it, the search space, the order of rows, and real tunings through a local Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from bilateral.config import load_config
from bilateral.errors import ConfigError
from bilateral.kinds import kind_of
from bilateral.plan import build_plan
from bilateral.tuning.rows import choose, dependencies, own_runs, row_order, tuning_config, tuning_plan
from bilateral.tuning.space import BUDGETS, decay_key, load_space
from bilateral.tuning.tuned import row_key
from ray_jobs import cluster
from tests.conftest import DATA_DIR, REPO, sweep_cmd, tiny_config

ENV = {**os.environ, **cluster.ENV, "OMP_NUM_THREADS": "1"}
TINY = [
    "data.val_size=200",
    "data.train_subset=500",
    "data.test_subset=400",
    "model.width=0.125",
    "model.dropout=0.1",
    "train.epochs=1",
    "train.batch_size=64",
    "train.eval_batch_size=500",
    DATA_DIR,
]


def with_tuned(cfg, rows: dict, source: str = "t.yaml"):
    cfg.tuned.rows, cfg.tuned.source = rows, source
    return cfg


def test_each_row_and_each_dependency_trains_with_its_own_tuned_settings():
    plain = {s.model_name: s for s in build_plan(tiny_config("plan.models=[bilateral-specialised]")).runs}
    rows = {
        "hemisphere-fine/resnet9": {"optim.lr": 0.01, "optim.hemisphere_weight_decay": 2e-4},
        "bilateral-specialised/resnet9": {"optim.lr": 0.5, "model.dropout": 0.3},
    }
    cfg = with_tuned(tiny_config("plan.models=[bilateral-specialised]"), rows)
    tuned = {s.model_name: s for s in build_plan(cfg).runs}
    left, right, net = tuned["hemisphere-fine"], tuned["hemisphere-coarse"], tuned["bilateral-specialised"]
    assert (left.optim.lr, left.optim.hemisphere_weight_decay) == (0.01, 2e-4)
    assert (net.optim.lr, net.model.dropout) == (0.5, 0.3)
    assert net.depends_on == (left.run_id, right.run_id)  # the heads sit on the tuned hemisphere
    assert right.run_id == plain["hemisphere-coarse"].run_id and not right.tuned  # a row not tuned
    assert left.run_id != plain["hemisphere-fine"].run_id
    assert net.tuned == {
        "source": "t.yaml",
        "row": "bilateral-specialised/resnet9",
        "settings": rows[row_key(net)],
    }
    assert net.settings == {} and net.model_name == "bilateral-specialised"  # summary rows keep their names
    moved = with_tuned(tiny_config("plan.models=[bilateral-specialised]"), rows, source="elsewhere.yaml")
    assert [s.run_id for s in build_plan(moved).runs] == [s.run_id for s in build_plan(cfg).runs]


def test_tuned_settings_are_checked_and_their_seeds_kept_out_of_the_sweep(tmp_path):
    cfg = with_tuned(tiny_config("plan.models=[unilateral]"), {"unilateral/resnet9": {"plan.pool_size": 3}})
    with pytest.raises(ConfigError, match="not a key of a run's config"):
        build_plan(cfg)
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump({"tuned": {"source": str(path), "seeds": [100], "rows": {}}}))
    with pytest.raises(ConfigError, match="tuning seeds"):
        load_config("smoke", path, ["plan.seeds=[0,100]"])
    assert load_config("smoke", path, ["plan.seeds=[0,1]"]).tuned.seeds == [100]


def test_the_search_space_reads_each_kinds_own_weight_decay(tmp_path):
    assert decay_key(kind_of("hemisphere-fine")) == "optim.hemisphere_weight_decay"
    assert decay_key(kind_of("bilateral-specialised")) == "optim.weight_decay"
    space = load_space()
    spec = next(s for s in build_plan(tiny_config("plan.models=[unilateral]")).runs)
    dims = space.for_run(spec)
    assert set(dims) == {"optim.lr", "optim.weight_decay"}
    lr, value = dims["optim.lr"]
    assert value == spec.optim.lr and lr.bounds(value) == pytest.approx((0.2 * value, 5 * value))
    bad = tmp_path / "space.yaml"
    bad.write_text("every_row: {plan.seeds: {low: 0, high: 1}}\n")
    with pytest.raises(ConfigError, match="neither weight_decay nor a key"):
        load_space(bad)
    bad.write_text("every_row: {optim.lr: {low: 0, high: 1, log: true}}\n")
    with pytest.raises(ConfigError, match="low > 0 when log"):
        load_space(bad)
    bad.write_text("every_row: {train.epochs: {low: 1, high: 5, integer: true}}\n")
    with pytest.raises(ConfigError, match="not searched"):
        load_space(bad)


def test_rows_are_tuned_after_the_rows_their_runs_depend_on():
    budget = BUDGETS["small"]
    cfg = tuning_config(tiny_config("plan.experiment=core", "plan.seeds=[0,1]"), budget)
    assert cfg.plan.seeds == [100] and not cfg.train.evaluate_test
    order = row_order(tuning_plan(cfg, {}), [100])
    assert order.index("hemisphere-fine/resnet9") < order.index("bilateral-specialised/resnet9")
    assert order.index("hemisphere-fine/resnet9") < order.index("bilateral-fine-fine/resnet9")
    assert "ensemble-top2/resnet9" not in order and len(order) == 8  # ensembles train nothing of their own
    chosen = {"hemisphere-fine/resnet9": {"optim.lr": 0.07, "optim.hemisphere_weight_decay": 1e-4}}
    plan = tuning_plan(cfg, chosen)
    deps = dependencies(plan, own_runs(plan, "bilateral-fine-fine/resnet9", [100])).runs
    assert sorted(s.seed for s in deps) == [100, 101]  # the pair: seed k and k+1, both as tuned
    assert all(s.optim.lr == 0.07 and not s.train.evaluate_test for s in deps)


def test_the_choice_is_the_best_trial_that_trained_every_epoch():
    trials = pd.DataFrame(
        {
            "row": ["r"] * 4,
            "trial": [1, 2, 3, 4],
            "epochs_trained": [5, 2, 5, 5],
            "val_score": [0.60, 0.90, 0.70, 0.70],
        }
    )
    assert choose(trials, 5)["trial"] == 3  # trial 2 was stopped early; 3 and 4 tie: the earlier
    with pytest.raises(ConfigError, match="no trial"):
        choose(trials.assign(epochs_trained=1), 5)


def tune_cmd(out, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "launch" / "tune.py"), "--out", str(out), "--name", "t", *TINY, *args]


def test_tuning_rows_then_a_sweep_that_trains_with_their_settings(tmp_path):
    """Through a local Ray: the specialised net and the two hemispheres it depends on, 3 trials each."""
    args = ["--models", "bilateral-specialised", "--trials", "3", "--num-cpus", "2", "--device", "cpu"]
    proc = subprocess.run(tune_cmd(tmp_path, *args), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "t"
    tuned = yaml.safe_load((root / "tuned.yaml").read_text())["tuned"]
    trials = pd.read_csv(root / "trials.csv")
    keys = ["hemisphere-fine/resnet9", "hemisphere-coarse/resnet9", "bilateral-specialised/resnet9"]
    assert list(tuned["rows"]) == keys and tuned["seeds"] == [100]
    assert trials.groupby("row").size().to_dict() == dict.fromkeys(keys, 3)
    best = {}
    for key in keys:
        rows = trials[trials["row"] == key]
        best[key] = rows.loc[rows["val_score"].idxmax()]
        assert tuned["rows"][key] == json.loads(best[key]["settings"])
    # no test metric exists to be read: tuning runs never evaluate the test split
    assert not [c for c in trials.columns if "test" in c]
    records = [json.loads(p.read_text()) for p in (root / "runs").glob("*/record.json")]
    assert len(records) == 9 and not [k for r in records for k in r if k.startswith("test_")]
    assert not list((root / "runs").glob("*/predictions.npz"))
    # the specialised net's heads were tuned on the hemispheres as tuned
    hemispheres = {best[k]["run_ids"] for k in keys[:2]}
    heads = [r for r in records if r["model"] == "bilateral-specialised"]
    assert all(set(r["spec"]["depends_on"]) == hemispheres for r in heads)
    assert "convergence.png" in (root / "report.md").read_text() and (root / "convergence.png").stat().st_size

    sweep = sweep_cmd(
        tmp_path / "sweep", "--config", str(root / "tuned.yaml"), "--models", "bilateral-specialised"
    )
    proc = subprocess.run([*sweep, "--seeds", "0", *TINY], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = [json.loads(p.read_text()) for p in (tmp_path / "sweep" / "t" / "runs").glob("*/record.json")]
    assert len(final) == 3
    for record in final:
        key = f"{record['model']}/{record['backbone']}"
        assert record["tuned"] == {
            "source": str(root / "tuned.yaml"),
            "row": key,
            "settings": tuned["rows"][key],
        }
        for setting, value in tuned["rows"][key].items():
            section, name = setting.split(".")
            assert record["spec"][section][name] == value
        assert "test_acc_fine" in record or "test_acc_coarse" in record
    assert (
        "Rows trained with the settings tuned for them"
        in (tmp_path / "sweep" / "t" / "report.md").read_text()
    )


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("ray") / "cluster.json"
    info = cluster.start(num_cpus=2, state=state)
    yield info
    cluster.stop(state)


def test_a_killed_tuning_resumes_without_redoing_finished_trials(tmp_path, ray_cluster):
    """SIGKILL the driver after its first finished trial; the rerun restores Tune's experiment and
    trains only the trials that had not finished (one at a time: --cpus-per-run 2 of 2 CPUs)."""
    args = [
        "--models",
        "hemisphere-fine",
        "--trials",
        "4",
        "--address",
        ray_cluster["address"],
        "--device",
        "cpu",
    ]
    cmd = tune_cmd(tmp_path, *args, "--cpus-per-run", "2", "train.epochs=2")
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "t" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("*/record.json")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in runs.glob("*/record.json")}
    assert 1 <= len(finished) < 4
    rerun = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming the Tune experiment" in rerun.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    trials = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert len(trials) == 4 and trials["run_ids"].nunique() == 4
    assert len(list(runs.iterdir())) == 4  # no trial beyond the budget
    full = trials[~trials["stopped_early"]]  # ASHA stops a trial before its runs write a record
    assert len(list(runs.glob("*/record.json"))) == len(full) >= len(finished)
