"""analysis/report.md and evaluation/report.md: each compared quantity gets a paired test across
seeds with its interval, Holm over the whole report, and the few-seeds warning."""

import pandas as pd
import pytest
from scipy import stats

from bilateral.analysis.report import Section, write_report

PROBES = pd.DataFrame(  # probes.csv's shape: one row per seed, net and hemisphere
    {
        "seed": [0, 0, 1, 1, 2, 2],
        "model": ["bilateral-specialised"] * 6,
        "hemisphere": ["left", "right"] * 3,
        "probe_fine": [0.60, 0.50, 0.62, 0.51, 0.61, 0.53],
    }
)
ROBUSTNESS = pd.DataFrame(  # robustness.csv's shape: seed, model, head, eps, acc
    {
        "seed": [0, 1, 2] * 2,
        "model": ["bilateral-specialised"] * 3 + ["unilateral"] * 3,
        "head": ["fine"] * 6,
        "eps": [2] * 6,
        "acc": [0.30, 0.32, 0.31, 0.28, 0.29, 0.31],
    }
)


def test_an_analysis_and_an_evaluation_report_print_intervals_and_holm_adjusted_tests(tmp_path):
    probes = Section("5. Linear probes of each hemisphere")
    probes.compare_seeds(PROBES, "probe_fine", ["model"], "hemisphere", "left")
    robustness = Section("Adversarial robustness")
    robustness.compare_seeds(ROBUSTNESS, "acc", ["head", "eps"], "model", "bilateral-specialised")
    analysis = write_report(tmp_path / "a", "s", [probes], {}, []).read_text()
    evaluation = write_report(tmp_path / "e", "s", [robustness], {}, [], title="Evaluation").read_text()

    right, left = [0.50, 0.51, 0.53], [0.60, 0.62, 0.61]
    p = stats.ttest_rel(right, left).pvalue
    diff = sum(r - lo for r, lo in zip(right, left, strict=True)) / 3
    half = stats.t.ppf(0.975, 2) * stats.tstd([r - lo for r, lo in zip(right, left, strict=True)]) / 3**0.5
    assert "## Tests across seeds" in analysis
    assert f"{diff:+.4f} [{diff - half:+.4f}, {diff + half:+.4f}]" in analysis
    assert (
        f"| {p:.3g} " in analysis and "right − left" in analysis and "model=bilateral-specialised" in analysis
    )
    assert "Too few seeds" not in analysis  # 3 seeds

    uni, spec = [0.28, 0.29, 0.31], [0.30, 0.32, 0.31]
    assert "unilateral − bilateral-specialised" in evaluation and "head=fine, eps=2" in evaluation
    assert f"| {stats.ttest_rel(uni, spec).pvalue:.3g} " in evaluation


def test_holm_runs_over_every_test_of_one_report_and_few_seeds_are_flagged(tmp_path):
    section = Section("both")
    section.compare_seeds(PROBES, "probe_fine", ["model"], "hemisphere", "left")
    section.compare_seeds(ROBUSTNESS, "acc", ["head", "eps"], "model", "bilateral-specialised")
    tests = pd.concat(section.tests)
    smallest = tests["p"].min()
    report = write_report(tmp_path, "s", [section], {}, []).read_text()
    assert f"| {min(1.0, 2 * smallest):.3g} " in report  # Holm: the smallest p of 2 tests, times 2
    two_seeds = Section("two")
    two_seeds.compare_seeds(PROBES[PROBES["seed"] < 2], "probe_fine", ["model"], "hemisphere", "left")
    report = write_report(tmp_path / "two", "s", [two_seeds], {}, []).read_text()
    assert "Too few seeds for these tests to mean anything**: as few as 2 paired seed(s)" in report
    assert two_seeds.tests[0]["p"].iloc[0] == pytest.approx(
        stats.ttest_rel([0.50, 0.51], [0.60, 0.62]).pvalue
    )
