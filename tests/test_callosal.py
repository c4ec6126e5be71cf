"""Callosal nets: hemispheres that exchange features (bilateral/models/callosal.py, kinds/callosal.py)."""

import subprocess

import pandas as pd
import pytest
import torch

from bilateral.comparison import load_comparison
from bilateral.errors import ConfigError
from bilateral.models import BilateralNet, ResNet9
from bilateral.models.callosal import CallosalNet
from bilateral.plan import build_plan
from bilateral.store import SweepStore
from bilateral.sweep import fusion_groups
from bilateral.training import run
from tests.conftest import CIFAR10_JPG, REPO, Killed, die_after_first_epoch, sweep_cmd, tiny_config

ROWS = [row.name for row in load_comparison("callosal").rows if row.base == "callosal"]  # six variants


def hemispheres():
    torch.manual_seed(0)
    return ResNet9(0.125), ResNet9(0.125)


@pytest.mark.parametrize("connection", ["concat", "gate"])
def test_a_new_callosal_net_computes_what_its_bilateral_net_does(connection):
    """Exchanges start as the identity: built from trained hemispheres, the net starts as the
    specialised bilateral net and the connections learn from there."""
    left, right = hemispheres()
    plain = BilateralNet(left, right, 20, 4, dropout=0.0).eval()
    callosal = CallosalNet(left, right, 20, 4, 0.0, connection).eval()
    callosal.heads.load_state_dict(plain.heads.state_dict())
    x = torch.randn(4, 3, 32, 32)
    a, b = plain(x), callosal(x)
    assert all(torch.allclose(a[h], b[h], atol=1e-6) for h in a)
    assert sorted(callosal.callosum) == ["1", "3"]  # after ResNet-9's two residual stages


def test_sum_exchange_and_bad_depths():
    left, right = hemispheres()
    callosal = CallosalNet(left, right, 20, 4, 0.0, "sum", [2]).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(callosal.left_features(x), left.eval()(x))  # the right stream came in
    with pytest.raises(ConfigError, match="must be distinct stages in 1..3"):
        CallosalNet(left, right, 20, 4, 0.0, "gate", [4])


def test_callosal_options_are_checked_when_the_plan_is_built(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rows:\n  - name: c\n    kind: callosal\n    options: {connection: telepathy}\n")
    with pytest.raises(ConfigError, match="callosal connection 'telepathy': choose one of sum, concat, gate"):
        build_plan(tiny_config(f"plan.experiment={path}"))


def test_frozen_callosal_runs_keep_their_hemispheres_and_resume_exactly(tmp_path, monkeypatch):
    plan = build_plan(tiny_config("plan.experiment=callosal", "plan.models=[callosal-gate-frozen]"))
    store, again = SweepStore(tmp_path / "a"), SweepStore(tmp_path / "b")
    for spec in plan.stages[0]:
        run(spec, store, device="cpu", data_dir=tiny_config().data_dir)
        run(spec, again, device="cpu", data_dir=tiny_config().data_dir)
    (callosal,) = plan.stages[1]
    assert callosal.options == {"connection": "gate", "init": "frozen"} and callosal.fusion_key is None
    assert [len(g) for g in fusion_groups([callosal], 4, store)] == [1]
    full = run(callosal, store, device="cpu", data_dir=tiny_config().data_dir)
    undo = die_after_first_epoch(monkeypatch, callosal.run_id)
    with pytest.raises(Killed):
        run(callosal, again, device="cpu", data_dir=tiny_config().data_dir)
    undo()
    resumed = run(callosal, again, device="cpu", data_dir=tiny_config().data_dir)
    assert resumed["resumed_from_epoch"] == 1 and resumed["test_acc_fine"] == full["test_acc_fine"]
    final = store.run(callosal.run_id).load_checkpoint("last")["model"]
    left = next(s for s in plan.stages[0] if s.kind == "hemisphere-fine")
    best = store.run(left.run_id).load_checkpoint("best")["model"]
    for key, value in best.items():
        if key.startswith("backbone."):
            assert torch.equal(final[f"left.{key.removeprefix('backbone.')}"], value), key
    gate = [v for k, v in final.items() if k.startswith("callosum.") and k.endswith("4.weight")]
    assert gate and all(g.abs().sum() > 0 for g in gate)  # zero at init: the connections learned
    assert full["trainable_params"] < full["params"] / 2


def test_the_callosal_comparison_on_real_cifar10_gives_a_row_per_variant(tmp_path):
    rows = [*ROWS, "bilateral-unspecialised"]
    args = ["--experiment", "callosal", "--models", ",".join(rows), "--seeds", "0"]
    data = ["--data", f"cifar10-hier4:{CIFAR10_JPG}", "train.epochs=1"]
    proc = subprocess.run(sweep_cmd(tmp_path, *args, *data), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert set(rows) <= set(summary.index)
    left, right = hemispheres()
    gate = CallosalNet(left, right, 10, 4, 0.0, "gate")
    params = summary["params"]
    overhead = params["callosal-gate-scratch"] - params["bilateral-unspecialised"]
    assert overhead == sum(p.numel() for p in gate.callosum.parameters()) > 0  # in the table


def test_the_analysis_covers_the_callosal_rows(tmp_path):
    from bilateral.analysis import run_analysis

    rows = "bilateral-specialised,callosal-gate-frozen,callosal-concat-scratch"
    proc = subprocess.run(
        sweep_cmd(tmp_path, "--experiment", "callosal", "--models", rows, "--seeds", "0", "train.epochs=1"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = ["scenarios", "attribution", "gradcam", "similarity"]
    data_dir = tiny_config().data_dir
    result = run_analysis(tmp_path / "t", device="cpu", data_dir=data_dir, parts=parts, gradcam_images=50)
    assert result.errors == {} and result.done == parts
    attribution = pd.read_csv(result.out / "attribution_summary.csv")
    assert set(attribution["bilateral"]) == set(rows.split(","))
    scenarios = pd.read_csv(result.out / "scenario_counts.csv")
    assert "callosal-gate-frozen" in set(scenarios["bilateral"])
    assert "callosal rows" in result.report.read_text()
    assert "callosal-gate-frozen" in set(pd.read_csv(result.out / "gradcam_spread.csv")["source"])
    similarity = pd.read_csv(result.out / "similarity_summary_mean.csv")
    assert "callosal-concat-scratch" in similarity.to_string()
