"""The analysis (bilateral/analysis) on a tiny trained sweep, and its measures on hand-made examples."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bilateral import analysis
from bilateral.analysis import analyze_sweep, run_analysis
from bilateral.analysis.attribution import grad_x_input, weight_norm_share
from bilateral.analysis.context import SweepContext
from bilateral.analysis.gradcam import (
    SumOfPredicted,
    area_above_half_max,
    bilateral_maps,
    hemisphere_maps,
    map_entropy,
    spatial_layers,
)
from bilateral.analysis.scenarios import SCENARIOS, correctness_table, scenario_counts
from bilateral.analysis.similarity import same_class_pairs, summarize
from bilateral.models import VGG11, Head, ResNet9
from bilateral.plan import build_plan
from bilateral.store import SweepStore
from bilateral.sweep import InProcessExecutor, run_sweep
from launch.analyze import main as analyze_main
from tests.conftest import tiny_config

TEST_IMAGES = 400  # data.test_subset in the tiny config


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Both hemispheres and both bilateral nets for two seeds, trained once for the whole module."""
    torch.set_num_threads(1)
    cfg = tiny_config("plan.seeds=[0,1]", "plan.models=[bilateral-specialised,bilateral-unspecialised]")
    plan = build_plan(cfg)
    store = SweepStore(tmp_path_factory.mktemp("analysis") / "tiny")
    failed = run_sweep(plan, store, InProcessExecutor(store, plan, "cpu", cfg.data_dir))
    assert not failed, failed
    return store.root, cfg.data_dir


@pytest.fixture(scope="module")
def analysed(sweep):
    root, data_dir = sweep
    result = run_analysis(root, device="cpu", data_dir=data_dir, gradcam_images=100)
    return root, result


def test_every_part_runs_and_the_report_embeds_existing_figures(analysed):
    root, result = analysed
    assert result.errors == {} and result.done == [
        "scenarios",
        "gradcam",
        "similarity",
        "attribution",
        "probes",
    ]
    assert result.out == root / "analysis"
    report = result.report.read_text()
    figures = [line[line.index("](") + 2 : -1] for line in report.splitlines() if line.startswith("![")]
    assert len(figures) >= 5
    for fig in figures:
        assert (result.out / fig).stat().st_size > 10_000, fig
    assert "FAILED" not in report  # recomputed predictions agree with predictions.npz
    for name in ("scenario_counts", "gradcam_spread", "similarity_summary", "attribution", "probes"):
        assert not pd.read_csv(result.out / f"{name}.csv").empty


def test_scenario_counts_sum_to_the_test_set_for_every_seed(analysed):
    root, result = analysed
    counts = pd.read_csv(result.out / "scenario_counts.csv")
    assert list(counts.scenario[counts.bilateral == "bilateral-specialised"]) == SCENARIOS
    for kind, group in counts.groupby("bilateral"):
        for seed in (0, 1):
            assert group[f"seed_{seed}"].sum() == TEST_IMAGES, (kind, seed)
        assert group["mean"].sum() == pytest.approx(TEST_IMAGES)
    # the complementarity counts are sums of scenario counts
    comp = pd.read_csv(result.out / "complementarity.csv").set_index(["bilateral", "event"])
    spec = counts[counts.bilateral == "bilateral-specialised"].set_index("scenario")
    fixed = sum(spec.loc[s, "seed_0"] for s in SCENARIOS if "L-" in s and "Bf+" in s)
    assert comp.loc[("bilateral-specialised", "left wrong, bilateral fine right"), "seed_0"] == fixed
    # per-image flags are the runs' own saved correctness
    ctx = SweepContext(root, device="cpu")
    per_image = pd.read_csv(result.out / "scenarios_per_image.csv")
    mine = per_image[(per_image.seed == 1) & (per_image.bilateral == "bilateral-specialised")]
    saved = ctx.predictions(ctx.run(1, "bilateral-specialised").run_id)
    np.testing.assert_array_equal(mine["Bc"].to_numpy(), saved["correct_coarse"])
    np.testing.assert_array_equal(mine["test_index"].to_numpy(), saved["test_index"])


def test_scenarios_from_hand_made_predictions():
    def preds(**correct):
        return {"test_index": np.arange(3), "label_fine": np.zeros(3), "label_coarse": np.zeros(3), **correct}

    table = correctness_table(
        preds(correct_fine=np.array([1, 0, 0])),
        preds(correct_coarse=np.array([1, 0, 1])),
        preds(correct_fine=np.array([1, 1, 0]), correct_coarse=np.array([0, 1, 1])),
    )
    assert list(table.scenario) == ["L+ R+ Bf+ Bc-", "L- R- Bf+ Bc+", "L- R+ Bf- Bc+"]
    counts = scenario_counts(table)
    assert len(counts) == 16 and counts.sum() == 3 and counts["L- R- Bf+ Bc+"] == 1


def test_cosine_similarity_matches_hand_computed_values():
    """A tiny linear backbone maps each image to known 2-d features."""
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        backbone[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    x = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]], [[3.0, 0.0]], [[-1.0, 0.0]]])
    features = backbone(x).detach().numpy()  # (1,0) (1,2) (0,2) (3,0) (-1,0)
    labels = np.array([0, 0, 1, 1, 1])
    groups = np.array(["a", "a", "a", "b", "b"])
    pairs = same_class_pairs({"left": features, "right": features[:, ::-1]}, labels, groups)
    got = {(int(i), int(j)): float(s) for i, j, s in zip(pairs.i, pairs.j, pairs.left, strict=True)}
    assert got == pytest.approx({(0, 1): 1 / math.sqrt(5), (2, 3): 0.0, (2, 4): 0.0, (3, 4): -1.0})
    assert pairs.right.to_numpy() == pytest.approx(pairs.left.to_numpy())  # a permutation keeps cosines
    s = summarize(pairs, ["left", "right"], ["a", "b"]).set_index("scenario")
    assert s.loc["all same-class pairs", "pairs"] == 4
    assert s.loc["a", "pairs"] == 1 and s.loc["a", "left_mean"] == pytest.approx(1 / math.sqrt(5))
    assert s.loc["b", "pairs"] == 1 and s.loc["b", "left_mean"] == pytest.approx(-1.0)


def test_attribution_shares_match_hand_computed_values():
    head = Head(4, 2, dropout=0.5)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[3.0, 0.0, 0.0, -4.0], [0.0, 0.0, 1.0, 0.0]]))
        head.linear.bias.zero_()
    head.train()  # dropout must not matter: the analysis runs the head in eval mode
    left, right = weight_norm_share(head, split=2)
    assert left == pytest.approx(3 / (3 + math.sqrt(17))) and left + right == pytest.approx(1)
    f = np.array([[1.0, 5.0, 0.0, -1.0], [0.0, 0.0, 2.0, 0.0]])
    # image 0: logits (3*1 + -4*-1, 0) = (7, 0) -> class 0; terms 3, 0 | 0, 4 -> left share 3/7
    # image 1: logits (0, 2) -> class 1; terms 0, 0 | 2, 0 -> left share 0
    g = grad_x_input(head, f, split=2)
    assert g["target"].tolist() == [0, 1]
    assert g["left_share"] == pytest.approx([3 / 7, 0.0])
    assert g["left_share"] + g["right_share"] == pytest.approx([1.0, 1.0])
    assert g["left_contribution"] == pytest.approx([3.0, 0.0])
    assert g["right_contribution"] == pytest.approx([4.0, 2.0])
    assert head.training and head.linear.weight.dtype == torch.float32  # the head itself is untouched


def test_attribution_shares_of_the_sweep_sum_to_one(analysed):
    _, result = analysed
    df = pd.read_csv(result.out / "attribution.csv")
    assert set(df.bilateral) == {"bilateral-specialised", "bilateral-unspecialised"}
    assert set(df["head"]) == {"fine", "coarse"} and set(df.method) == {"weight_norm", "grad_x_input"}
    assert len(df) == 2 * 2 * 2 * 2  # kinds x seeds x heads x methods
    np.testing.assert_allclose(df.left_share + df.right_share, 1.0, atol=1e-9)
    assert df.left_share.between(0, 1).all()


def test_gradcam_maps_have_the_input_size_and_vary(sweep):
    root, data_dir = sweep
    ctx = SweepContext(root, device="cpu", data_dir=data_dir)
    x, raw = ctx.test_images(ctx.run(0, "hemisphere-fine"), np.arange(16))
    assert x.shape == (16, 3, 32, 32) and raw.shape == (16, 32, 32, 3)
    for kind in ("hemisphere-fine", "hemisphere-coarse"):
        maps = hemisphere_maps(ctx.model(ctx.run(0, kind)), x)
        assert maps.shape == (16, 32, 32) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
        assert (maps.reshape(16, -1).std(1) > 1e-3).mean() >= 0.9, kind
    maps = bilateral_maps(ctx.model(ctx.run(0, "bilateral-specialised")), x)
    assert set(maps) == {(t, s) for t in ("fine", "coarse", "sum") for s in ("left", "right")}
    for key, m in maps.items():
        assert m.shape == (16, 32, 32), key
        assert (m.reshape(16, -1).std(1) > 1e-3).mean() >= 0.75, key


def test_gradcam_layers_skip_1x1_outputs():
    assert [hw for _, hw in spatial_layers(ResNet9(width=0.125))] == [(16, 16), (4, 4)]
    assert [hw for _, hw in spatial_layers(VGG11(width=0.125))] == [
        (32, 32),
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
    ]

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1)
            self.gradcam_layers = [self.conv, self.pool]

        def forward(self, x):
            return self.pool(self.conv(x)).flatten(1)

    toy = Toy()
    assert [layer for layer, _ in spatial_layers(toy)] == [toy.conv]  # the 1x1 pool is dropped


def test_spread_measures_on_hand_made_maps():
    uniform, spot, empty = np.ones((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))
    spot[1, 2] = 1.0
    half = np.zeros((4, 4))
    half[:2] = 1.0
    maps = np.stack([uniform, spot, half, empty])
    assert map_entropy(maps)[:3] == pytest.approx([1.0, 0.0, math.log(8) / math.log(16)])
    assert area_above_half_max(maps)[:3] == pytest.approx([1.0, 1 / 16, 0.5])
    assert np.isnan(map_entropy(maps)[3]) and np.isnan(area_above_half_max(maps)[3])


def test_missing_runs_give_clear_errors_and_other_parts_still_run(sweep, tmp_path):
    root, data_dir = sweep
    partial = tmp_path / "hemispheres-only"
    shutil.copytree(root / "runs", partial / "runs", ignore=shutil.ignore_patterns("bilateral-*"))
    result = run_analysis(
        partial, device="cpu", data_dir=data_dir, parts=["scenarios", "similarity", "attribution"]
    )
    assert result.done == ["similarity"]
    assert set(result.errors) == {"scenarios", "attribution"}
    for error in result.errors.values():
        assert "bilateral-specialised" in error and "--models" in error
    report = result.report.read_text()
    assert "Parts that could not run" in report and "--models bilateral-specialised" in report
    assert (
        analyze_main([str(partial), "--device", "cpu", "--data-dir", data_dir, "--parts", "attribution"]) == 2
    )
    assert (
        analyze_main(
            [str(partial), "--device", "cpu", "--data-dir", data_dir, "--parts", "scenarios,similarity"]
        )
        == 1
    )
    assert analyze_main([str(tmp_path / "nowhere"), "--device", "cpu"]) == 2


def test_a_damaged_record_is_named_and_the_rest_analysed(sweep, tmp_path, capsys):
    root, data_dir = sweep
    copy = tmp_path / "damaged"
    shutil.copytree(root / "runs", copy / "runs")
    (victim,) = [p for p in (copy / "runs").glob("bilateral-unspecialised-*-s1-*/record.json")]
    victim.write_text("{")
    argv = [str(copy), "--device", "cpu", "--data-dir", data_dir, "--parts", "similarity"]
    assert analyze_main(argv) == 1
    err = capsys.readouterr().err
    assert f"{victim.parent.name} left out of the analysis: {victim} is damaged" in err
    assert f"{victim.parent.name} left out" in (copy / "analysis" / "report.md").read_text()


def test_cli_and_sweep_hook(sweep, capsys, monkeypatch):
    root, data_dir = sweep
    assert analyze_main([str(root), "--device", "cpu", "--data-dir", data_dir, "--parts", "scenarios"]) == 0
    assert "report.md" in capsys.readouterr().out
    # analyze_sweep is what `launch/sweep.py --analyze` calls (every part; one here, to stay fast)
    real = analysis.run_analysis
    monkeypatch.setattr(analysis, "run_analysis", lambda *a, **k: real(*a, parts=["attribution"], **k))
    out = analyze_sweep(root, device="cpu", data_dir=data_dir)
    assert out == root / "analysis" and "## 4. Head attribution" in (out / "report.md").read_text()


def test_summed_target_adds_the_two_predicted_logits():
    out = torch.tensor([0.0, 1.0, 2.0, 10.0, 20.0])  # 3 fine logits, then 2 coarse logits
    assert SumOfPredicted(fine=2, coarse=1, num_fine=3)(out).item() == 22.0
    batch = torch.stack([out, out + 1])
    assert SumOfPredicted(fine=0, coarse=0, num_fine=3)(batch).tolist() == [10.0, 12.0]
