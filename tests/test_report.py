import math

import pandas as pd
import pytest
from scipy import stats

from bilateral.config import load_config, to_dict
from bilateral.report import (
    MIN_EPOCHS,
    MIN_WIDTH,
    REAL_COMPARISON,
    holm,
    markdown,
    paired_differences,
    runs_table,
    summarize,
    too_few_seeds,
    toy_scale_banner,
    write_report,
)
from bilateral.store import SweepStore


def record(model, seed, fine, coarse, wall=3600.0, member=0, depends_on=(), backbone="resnet9", run_id=None):
    return {
        "run_id": run_id or f"{model}-{backbone}-s{seed}-m{member}",
        "model": model,
        "backbone": backbone,
        "seed": seed,
        "member": member,
        "test_acc_fine": fine,
        "test_acc_coarse": coarse,
        "params": 100,
        "wall_time_s": wall,
        "spec": {"depends_on": list(depends_on)},
    }


RECORDS = [
    record("hemisphere-fine", 0, 0.60, float("nan"), run_id="hf0"),
    record("hemisphere-coarse", 0, float("nan"), 0.70, run_id="hc0"),
    record("bilateral-specialised", 0, 0.70, 0.80, wall=1800, depends_on=["hf0", "hc0"]),
    record("bilateral-specialised", 1, 0.72, 0.84, wall=1800),
    record("bilateral-specialised", 2, 0.74, 0.82, wall=1800),
    record("unilateral", 0, 0.65, 0.75),
    record("unilateral", 1, 0.66, 0.79),
    record("unilateral", 2, 0.70, 0.76),
    record("unilateral", 0, 0.10, 0.10, member=3),  # a pool member: no row of its own
]


def test_summary_statistics_on_known_records():
    summary = summarize(runs_table(RECORDS)).set_index("model")
    bil = summary.loc["bilateral-specialised"]
    assert bil["seeds"] == 3
    assert bil["fine_acc_mean"] == pytest.approx(0.72)
    assert bil["fine_acc_std"] == pytest.approx(0.02)  # sample std of .70 .72 .74
    assert bil["coarse_acc_mean"] == pytest.approx(0.82)
    assert bil["coarse_acc_std"] == pytest.approx(0.02)
    # own 3 x 0.5 h plus the two hemispheres of seed 0 (1 h each)
    assert bil["compute_hours"] == pytest.approx(3.5)
    uni = summary.loc["unilateral"]
    assert uni["seeds"] == 3 and uni["fine_acc_mean"] == pytest.approx((0.65 + 0.66 + 0.70) / 3)
    assert math.isnan(summary.loc["hemisphere-fine", "coarse_acc_mean"])
    assert math.isnan(summary.loc["hemisphere-fine", "fine_acc_std"])  # one seed: no std


def test_paired_difference_matches_scipy():
    diffs = paired_differences(runs_table(RECORDS)).set_index("model")
    uni = diffs.loc["unilateral"]
    assert uni["pairs"] == 3
    assert uni["fine_diff_mean"] == pytest.approx(((0.65 - 0.70) + (0.66 - 0.72) + (0.70 - 0.74)) / 3)
    expected = stats.ttest_rel([0.65, 0.66, 0.70], [0.70, 0.72, 0.74]).pvalue
    assert uni["fine_p"] == pytest.approx(expected)
    assert math.isnan(diffs.loc["hemisphere-fine", "fine_p"])  # one pair


def test_write_report_files(tmp_path):
    sweep = SweepStore(tmp_path / "s")
    import json

    for r in RECORDS:
        path = sweep.run(r["run_id"]).path("record.json")
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(r))
    write_report(sweep.root, copy_summary_to=tmp_path / "summary.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.columns) == [
        "model",
        "backbone",
        "seeds",
        "fine_acc_mean",
        "fine_acc_std",
        "coarse_acc_mean",
        "coarse_acc_std",
        "params",
        "train_flops",
        "inference_flops",
        "compute_hours",
    ]
    assert len(summary) == 4
    assert len(pd.read_csv(sweep.root / "runs.csv")) == len(RECORDS)
    report = (sweep.root / "report.md").read_text()
    assert "0.7200 ± 0.0200" in report and "minus bilateral-specialised" in report


def test_holm_against_a_hand_computed_case():
    # sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 -> 0.04, 0.06, 0.06 (kept monotone), 0.06 (0.04 < 0.06)
    assert holm([0.03, 0.01, float("nan"), 0.04, 0.02]) == pytest.approx(
        [0.06, 0.04, math.nan, 0.06, 0.06], nan_ok=True
    )
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1


def test_the_report_says_when_the_seeds_are_too_few_and_gives_intervals():
    runs = runs_table(RECORDS)
    report = markdown(runs, "s")
    assert "Too few seeds" not in report  # 3 pairs
    assert "95% CI (fine)" in report and "Holm p (fine)" in report
    two_seeds = runs_table([r for r in RECORDS if r["seed"] < 2])
    assert "Too few seeds for these tests to mean anything**: 2 paired seed(s)" in markdown(two_seeds, "s")
    assert too_few_seeds(5) is None


def test_the_toy_scale_banner_follows_the_scale_that_was_run_not_the_preset_name():
    runs = runs_table(RECORDS)
    smoke = to_dict(load_config("smoke"))
    report = markdown(runs, "s", config=smoke)
    banner = report.index("A machinery check at toy scale")
    assert banner < report.index("| model") and REAL_COMPARISON in report
    for short in ("width 0.125", "4,000 training images an epoch", "7 epochs", "synthetic images"):
        assert short in report
    small = to_dict(load_config("small"))  # width 1/4, real CIFAR-10's 45,000 images, 10 epochs
    assert small["model"]["width"] == MIN_WIDTH and small["train"]["epochs"] >= MIN_EPOCHS
    assert toy_scale_banner(small) is None
    # the records' images per epoch decide, whatever the config or preset name says
    seen = runs.assign(train_images=4_000 * 10, epochs=10)
    banner = toy_scale_banner({**small, "preset": "small"}, seen)
    assert banner is not None and "4,000 training images an epoch (40,000 or more)" in banner
    full = runs.assign(train_images=44_544 * 10, epochs=10)
    assert (
        toy_scale_banner(
            {**smoke, "preset": "smoke", **{k: small[k] for k in ("data", "model", "train")}}, full
        )
        is None
    )
    assert "toy scale" not in markdown(runs, "s", config=to_dict(load_config("fast")))


def test_the_report_embeds_the_forest_plot_per_seed_points_and_curves_with_the_chosen_epoch(tmp_path):
    import json

    from bilateral.report_figures import curves

    sweep = SweepStore(tmp_path / "s")
    for r in RECORDS:
        run = sweep.run(r["run_id"])
        run.path("record.json").parent.mkdir(parents=True)
        run.path("record.json").write_text(json.dumps({**r, "best_epoch": 1, "tested_epoch": 1}))
        run.write_metrics(
            [
                {"epoch": e, "train_loss": 2.0 - 0.5 * e, "val_acc_fine": 0.1 * e, "val_acc_coarse": 0.2 * e}
                for e in range(3)
            ]
        )
    write_report(sweep.root)
    report = (sweep.root / "report.md").read_text()
    for name in ("forest", "learning_curves", "comparison", "accuracy_vs_cost"):
        assert f"](figures/{name}.png)" in report
        assert (sweep.root / "figures" / f"{name}.png").stat().st_size > 5000
    assert "x: each run's chosen epoch" in report and "each seed (dots)" in report
    table = curves(sweep, runs_table(RECORDS).assign(tested_epoch=1))
    assert set(table["metric"]) == {"fine", "coarse", "train loss"}
    chosen = table[table["chosen"]]
    assert set(chosen["epoch"]) == {2}  # tested_epoch 1 is the second epoch
    uni = table[(table["row"] == "unilateral / resnet9") & (table["metric"] == "train loss")]
    assert sorted(uni["value"].unique()) == [1.0, 1.5, 2.0]


def test_a_cifar100_resnet9_report_puts_the_authors_figures_beside_its_own():
    config = {"data": {"source": "cifar100:/datasets"}, "plan": {"backbone": "resnet9"}, "preset": "fast"}
    report = markdown(runs_table(RECORDS), "s", config=config)
    assert "## Beside the authors' figures" in report and "about 0.82" in report and "0.7200" in report
    assert "Beside the authors'" not in markdown(
        runs_table(RECORDS), "s", config={"data": {"source": "synthetic"}}
    )


def test_the_fidelity_check_states_the_expected_direction_of_a_difference_from_the_authors():
    from bilateral import fidelity

    def line(fine):
        summary = pd.DataFrame(
            {
                "model": ["hemisphere-fine"],
                "backbone": ["resnet9"],
                "fine_acc_mean": [fine],
                "coarse_acc_mean": [0],
            }
        )
        (only,) = fidelity.outside_bands(summary)
        return only

    assert "below it by 1.0 points, as expected" in line(0.65)  # their 50,000 images and test-set choice
    assert "8.0 points below it, more than their protocol explains" in line(0.58)
    assert "above it, although they trained on 50,000 images" in line(0.72)
    config = {"data": {"source": "cifar100"}, "plan": {"backbone": "resnet9"}, "preset": "fast"}
    assert "trained on 50,000 images, checkpoints chosen on test" in markdown(
        runs_table(RECORDS), "s", config=config
    )
