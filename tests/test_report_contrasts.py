"""report.md with declared primary contrasts: the first table, its verdicts, Holm over the family
alone, the image bootstrap from the runs' predictions, and the paired/Welch choice."""

import json

import numpy as np
import pandas as pd
import pytest

from bilateral.comparison import load_comparison
from bilateral.contrasts import primary
from bilateral.report import markdown, runs_table, write_report
from bilateral.store import SweepStore

IMAGES = 2000
SPEC = [0.700, 0.710, 0.720, 0.705, 0.715]  # bilateral-specialised, fine, per seed
OTHERS = {  # row: bilateral-specialised minus the row per seed, in points
    "unilateral": [5.0, 4.8, 5.2, 4.8, 5.1],  # clearly lower: specialised is higher
    "bilateral-unspecialised": [0.1, -0.1, 0.05, -0.05, 0.0],  # equivalent within ±1
    "ensemble-top2": [3.0, -3.0, 2.0, -2.5, 1.0],  # noisy: inconclusive
}
CONTRASTS = """rows: [bilateral-specialised, bilateral-unspecialised, unilateral, ensemble]
contrasts:
  margin: 1.0
  primary:
    - {row: bilateral-specialised, minus: unilateral, heads: [fine]}
    - {row: bilateral-specialised, minus: bilateral-unspecialised, heads: [fine]}
    - {row: bilateral-specialised, minus: ensemble-top2, heads: [fine]}
"""


def records(pairing="seed"):
    out = []
    rows = {"bilateral-specialised": SPEC}
    rows.update({m: [s - d / 100 for s, d in zip(SPEC, diffs, strict=True)] for m, diffs in OTHERS.items()})
    for model, accs in rows.items():
        for seed, acc in enumerate(accs):
            out.append(
                {
                    "run_id": f"{model}-s{seed}",
                    "model": model,
                    "backbone": "resnet9",
                    "seed": seed,
                    "member": 0,
                    "test_acc_fine": round(acc, 6),
                    "test_acc_coarse": 0.8,
                    "params": 100,
                    "wall_time_s": 60.0,
                    "spec": {"depends_on": [], "data": {"pairing": pairing}},
                }
            )
    return out


def sweep(tmp_path, pairing="seed"):
    (tmp_path / "c.yaml").write_text(CONTRASTS)
    store = SweepStore(tmp_path / "s")
    for r in records(pairing):
        run = store.run(r["run_id"])
        run.path("record.json").parent.mkdir(parents=True)
        run.path("record.json").write_text(json.dumps(r))
        right = int(round(r["test_acc_fine"] * IMAGES))
        run.save_arrays(
            "predictions.npz",
            {"test_index": np.arange(IMAGES), "correct_fine": np.arange(IMAGES) < right},
        )
    config = {"plan": {"experiment": str(tmp_path / "c.yaml"), "backbone": "resnet9"}}
    return store, config


def first_table(report: str) -> pd.DataFrame:
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:end]]
    return pd.DataFrame(cells[2:], columns=cells[0])


def test_the_first_table_lists_the_declared_contrasts_with_their_verdicts(tmp_path):
    store, config = sweep(tmp_path)
    runs = runs_table(store.read_records()[0])
    report = markdown(runs, "s", config=config, store=store)
    table = first_table(report).set_index("contrast")
    assert list(table.index) == [
        "bilateral-specialised − unilateral",
        "bilateral-specialised − bilateral-unspecialised",
        "bilateral-specialised − ensemble-top2",
    ]
    assert list(table["verdict"]) == ["higher", "equivalent within ±1 points", "inconclusive"]
    assert set(table["test"]) == {"paired t"} and set(table["seeds"]) == {"5"}
    clear = table.loc["bilateral-specialised − unilateral"]
    assert clear["Δ (points)"] == "+4.98"
    for column in ("95% CI", "p", "Holm p", "detectable (80%)", "TOST p (±1)", "95% CI, test images"):
        assert clear[column] != "—"
    # Holm over these 3 tests alone (not the exploratory ones): the smallest p is multiplied by 3
    numbers = primary(runs, load_comparison(config["plan"]["experiment"]), config)
    assert numbers["p_holm"].iloc[0] == pytest.approx(3 * numbers["p"].iloc[0])
    # the image bootstrap: on 2,000 images a 5-point gap has an interval about +-1.4 points wide
    low, high = (float(v) for v in clear["95% CI, test images"].strip("[]").split(","))
    assert low < 4.98 < high and 0.5 < high - low < 4
    assert "## Exploratory: each baseline minus bilateral-specialised" in report
    assert "Holm p (fine)" not in report  # exploratory tables are unadjusted


def test_without_pairing_the_contrasts_use_welch_and_say_so(tmp_path):
    store, config = sweep(tmp_path, pairing="run")
    report = markdown(runs_table(store.read_records()[0]), "s", config=config)  # no store: no bootstrap
    table = first_table(report)
    assert set(table["test"]) == {"Welch t"} and "Welch's t (the arms' runs drew their own" in report
    assert set(table["95% CI, test images"]) == {"—"}
    # unpaired, the seeds' own spread (1 point) swamps the 0.1-point differences: not equivalent
    assert table["verdict"].iloc[1] == "inconclusive"


def test_write_report_computes_the_bootstrap_from_predictions(tmp_path):
    store, _ = sweep(tmp_path)
    (store.root / "sweep.json").write_text(
        json.dumps({"config": {"plan": {"experiment": str(tmp_path / "c.yaml")}}, "runs": []})
    )
    write_report(store.root)
    table = first_table((store.root / "report.md").read_text())
    assert "—" not in set(table["95% CI, seeds + images"])


def test_a_sweep_without_declared_contrasts_keeps_todays_report():
    report = markdown(runs_table(records()), "s", config={"plan": {"experiment": "paper"}})
    assert "Primary contrasts" not in report and "Holm p (fine)" in report
    assert first_table(report).columns[0] == "model"
