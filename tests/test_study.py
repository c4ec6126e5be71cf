"""launch/study.py: one sweep per value of a key, and every row's validation accuracy against it."""

import subprocess
import sys

import pandas as pd

from tests.conftest import DATA_DIR, REPO, TINY


def test_an_epochs_study_tabulates_every_row_per_value(tmp_path):
    cmd = [sys.executable, str(REPO / "launch" / "study.py"), "--values", "2,1", "--out", str(tmp_path)]
    cmd += ["--name", "e", "--", "--seeds", "0", "--models", "hemisphere-fine,unilateral", *TINY, DATA_DIR]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "e" / "study.csv")
    rows = set(zip(table["row"], table["head"], strict=True))
    assert rows == {("hemisphere-fine", "fine"), ("unilateral", "fine"), ("unilateral", "coarse")}
    assert sorted(set(table["value"])) == [1, 2]
    last = table[table["value"] == 2]
    assert (last["points_below_last"] == 0).all()
    first = table[table["value"] == 1].set_index(["row", "head"])
    final = last.set_index(["row", "head"])
    expected = 100 * (final["val_acc"] - first["val_acc"])
    assert (abs(first["points_below_last"] - expected) < 1e-9).all()
    assert "Smallest train.epochs with every row within 1 point(s)" in proc.stdout
    assert (tmp_path / "e-1" / "summary.csv").is_file() and (tmp_path / "e-2" / "summary.csv").is_file()


def test_time_to_accuracy_compares_two_recipes_on_one_run_each(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "launch" / "time_to_accuracy.py"),
        "--data",
        "synthetic",
        "--width",
        "0.125",
    ]
    cmd += [
        "--out",
        str(tmp_path),
        "--name",
        "tta",
        *[o for o in TINY if not o.startswith("model.width")],
        DATA_DIR,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "tta" / "time_to_accuracy.md").read_text()
    assert "| authors | 2 |" in text and "| small | 2 |" in text
    assert "validation accuracy" in text and "The authors' recipe needs" in text
    records = {p.parent.parent.parent.name: p for p in tmp_path.glob("tta-*/runs/*/record.json")}
    assert set(records) == {"tta-authors", "tta-small"}
