"""The evaluation (bilateral/evaluation): attacks, corruptions, detection scores, held-out classes and
transfer, on hand-made cases and on a tiny sweep of real CIFAR-10 trained with held-out classes."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bilateral.data import load_dataset
from bilateral.data.holdout import held_out_classes, split_held_out
from bilateral.errors import ConfigError
from bilateral.evaluation import corruptions, detection, robustness
from bilateral.evaluation.context import EvalContext
from bilateral.evaluation.transfer import nearest_class_mean
from bilateral.plan import build_plan
from bilateral.run_data import run_data
from tests.conftest import CIFAR10_JPG, DATA_DIR, REPO, sweep_cmd, tiny_config

CIFAR = f"cifar10-hier4:{CIFAR10_JPG}"


def test_fgsm_is_one_signed_gradient_step_in_pixel_space():
    """On a linear model the gradient of CE w.r.t. the normalised input is known in closed form:
    x_adv = clip(x + eps * sign(d CE / d x), 0, 1), with the normalisation applied after."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels = torch.rand(5, 3, 2, 2)
    labels = torch.tensor([0, 1, 2, 0, 1])
    eps = 8 / 255
    adv = robustness.make_attack("fgsm", model, eps, mean, std)((pixels - m) / s, labels)
    W = model[1].weight.detach()
    p = torch.softmax(model((pixels - m) / s), 1).detach()
    grad_z = (p - nn.functional.one_hot(labels, 3)) @ W  # dCE/d(normalised input), flattened
    grad_pixels = grad_z.view_as(pixels) / s  # chain rule through (x - m) / s
    expected = ((pixels + eps * grad_pixels.sign()).clamp(0, 1) - m) / s
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    assert (adv * s + m - pixels).abs().max() <= eps + 1e-6


def test_the_joint_logits_cross_entropy_is_the_sum_of_both_heads():
    fine, coarse = torch.randn(6, 5), torch.randn(6, 2)
    net = lambda x: {"fine": fine, "coarse": coarse}  # noqa: E731
    y_fine, y_coarse = np.array([0, 1, 2, 3, 4, 0]), np.array([0, 1, 0, 1, 0, 1])
    joint = robustness.JointLogits(net)(None)
    y = torch.from_numpy(robustness.target_labels("summed", y_fine, y_coarse, 2))
    summed = nn.functional.cross_entropy(fine, torch.from_numpy(y_fine)) + nn.functional.cross_entropy(
        coarse, torch.from_numpy(y_coarse)
    )
    torch.testing.assert_close(nn.functional.cross_entropy(joint, y), summed)


def test_corruptions_are_deterministic_and_change_the_images():
    raw = load_dataset("synthetic").test.images[:3]
    for name in corruptions.corruption_names():
        for severity in (1, 5):
            once = corruptions.corrupt_images(raw, name, severity)
            assert once.dtype == np.uint8 and once.shape == raw.shape
            assert np.array_equal(once, corruptions.corrupt_images(raw, name, severity)), name
            assert not np.array_equal(once, raw), (
                f"{name} at severity {severity} left the images as they were"
            )


def test_hierarchy_inconsistency_and_auroc_on_a_constructed_case():
    f2c = np.array([0, 0, 1, 1])
    agree_fine = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.8, 0.1]]))
    agree_coarse = np.log(np.array([[0.8, 0.2], [0.1, 0.9]]))  # = the fine distributions summed
    clash_coarse = agree_coarse[:, ::-1].copy()  # the coarse head names the other parent
    assert np.allclose(detection.inconsistency(agree_fine, agree_coarse, f2c), 0)
    assert np.allclose(detection.inconsistency(agree_fine, clash_coarse, f2c), [0.6, 0.8])
    scores = np.r_[
        detection.inconsistency(agree_fine, agree_coarse, f2c),
        detection.inconsistency(agree_fine, clash_coarse, f2c),
    ]
    assert detection.auroc(np.array([False, False, True, True]), scores) == 1.0
    assert detection.auroc(np.array([False, True, False, True]), np.array([0.1, 0.35, 0.4, 0.8])) == 0.75
    assert np.isnan(detection.auroc(np.array([True, True]), np.array([0.1, 0.2])))


def test_held_out_classes_are_absent_from_every_split_the_runs_see():
    source = load_dataset("synthetic")
    kept, held = split_held_out(source, 1, seed=0)
    assert held is not None and held.num_fine == source.num_coarse  # one per coarse class
    assert sorted(held.fine_to_coarse) == list(range(source.num_coarse))
    assert not set(kept.fine_names) & set(held.fine_names)
    for part in ("train", "test"):
        kept_split, held_split, whole = (getattr(d, part) for d in (kept, held, source))
        names = {source.fine_names[i] for i in held_out_classes(source, 1, 0)}
        assert len(kept_split) + len(held_split) == len(whole)
        assert not {kept.fine_names[i] for i in np.unique(kept_split.fine)} & names
        assert len(held_split) == sum(source.fine_names[i] in names for i in whole.fine)
    # the plan of experiments/transfer.yaml trains every run, pool and ensembles included, without them
    plan = build_plan(tiny_config("plan.experiment=transfer"))
    assert {s.data.holdout_per_coarse for s in plan.runs} == {1}
    data = run_data(plan.runs[0].data, str(REPO / "data"))
    assert data.fingerprint() == kept.fingerprint()
    with pytest.raises(ConfigError, match="every fine class of coarse class"):
        held_out_classes(source, 5, 0)


@pytest.fixture(scope="module")
def transfer_sweep(tmp_path_factory):
    """A tiny sweep of experiments/transfer.yaml on real CIFAR-10 (4 classes held out), 1 seed."""
    out = tmp_path_factory.mktemp("evaluation")
    rows = "hemisphere-fine,hemisphere-coarse,bilateral-specialised,unilateral"
    cmd = sweep_cmd(out, "--experiment", "transfer", "--data", CIFAR, "--seeds", "0", "--models", rows)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "t"


def test_robust_accuracy_does_not_rise_with_eps_on_a_trained_model(transfer_sweep):
    ctx = EvalContext(transfer_sweep, device="cpu", data_dir=str(REPO / "data"), images=100)
    ev = next(e for e in ctx.runs if e.model == "unilateral")
    table = pd.DataFrame(robustness.evaluate_run(ctx, ev))
    for head in ev.heads:
        clean = table[(table.attack == "none") & (table["head"] == head)]["acc"].item()
        pgd = table[(table.attack == "pgd") & (table.target == head) & (table["head"] == head)].sort_values(
            "eps"
        )
        curve = [clean, *pgd["acc"]]
        assert clean > 0.3, f"{head}: the smoke model did not learn ({clean})"
        assert all(a >= b for a, b in zip(curve, curve[1:], strict=False)), f"{head}: {curve}"
        assert curve[-1] < clean  # eps 8/255 hurts


def test_every_part_runs_and_the_report_shows_every_figure(transfer_sweep):
    cmd = [sys.executable, str(REPO / "launch" / "evaluate.py"), str(transfer_sweep), "--images", "60"]
    done = subprocess.run(
        [*cmd, "--data-dir", DATA_DIR.split("=", 1)[1]], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = transfer_sweep / "evaluation"
    report = (out / "report.md").read_text()
    for name in ("robustness", "corruptions", "detection", "transfer"):
        assert f"](figures/{name}.png)" in report and (out / "figures" / f"{name}.png").stat().st_size > 5000
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
    scores = set(pd.read_csv(out / "detection.csv")["score"])
    assert {"msp", "energy", "hierarchy", "hemispheres"} <= scores
    transfer = pd.read_csv(out / "transfer.csv")
    assert set(transfer["representation"]) == {"left", "right", "all"}
    # few-shot nearest-class-mean on real CIFAR-10 features of 4 classes no run was trained on
    ten_shot = transfer[(transfer["method"] == "nearest class mean") & (transfer["shots"] == 10)]
    assert (ten_shot["acc"] > 0.25 + 0.05).all(), ten_shot[["model", "representation", "acc"]]


def test_nearest_class_mean_on_separable_and_on_shuffled_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    features = rng.normal(size=(120, 8)) + 4 * np.eye(8)[labels]
    acc, _ = nearest_class_mean(features, labels, features, labels, shots=5, draws=10, seed=0)
    assert acc > 0.95
    acc, _ = nearest_class_mean(
        features, rng.permutation(labels), features, labels, shots=5, draws=50, seed=0
    )
    assert acc < 0.45


def test_a_missing_attack_or_corruption_library_is_named_with_its_install_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    blocked = "import sys\nfor m in ('torchattacks', 'imagecorruptions'):\n    sys.modules[m] = None\n"
    (site / "sitecustomize.py").write_text(blocked)
    (tmp_path / "sweep" / "runs").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    cmd = [sys.executable, str(REPO / "launch" / "evaluate.py"), str(tmp_path / "sweep")]
    proc = subprocess.run(
        [*cmd, "--parts", "robustness,corruptions"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "pip install --no-deps torchattacks==3.5.1" in proc.stderr
    assert "pip install -e '.[evaluation]'" in proc.stderr
