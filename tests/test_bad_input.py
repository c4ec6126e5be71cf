"""Bad input a new user can give: each case ends in one clear message, no traceback, and no finished
run lost. Subprocesses of the front door, where exit codes and stderr are what the user sees."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bilateral.errors import DiskFullError
from bilateral.store import SweepStore, write_atomic
from bilateral.sweep import fusion_groups
from tests.conftest import REPO, sweep_cmd


def front_door(*args: str, out: Path, expect: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(sweep_cmd(out, *args), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == expect, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def test_malformed_yaml_config_names_the_file_and_line(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("train:\n  epochs: [3\n")
    proc = front_door("--config", str(config), "--dry-run", out=tmp_path, expect=2)
    assert f"config file '{config}' is not valid YAML at line" in proc.stderr
    config.write_text("- train\n- epochs\n")
    proc = front_door("--config", str(config), "--dry-run", out=tmp_path, expect=2)
    assert "holds a ListConfig, not a mapping" in proc.stderr


def test_out_of_range_value_is_refused_at_configuration_time(tmp_path):
    proc = front_door("model.dropout=1.5", out=tmp_path, expect=2)
    assert "model.dropout=1.5 is out of range: it must be in [0, 1)" in proc.stderr
    assert not (tmp_path / "t").exists()  # refused before the sweep directory was made


def test_dry_run_checks_the_dataset_path_without_decoding(tmp_path):
    missing = tmp_path / "no-such-cifar"
    proc = front_door("--data", f"cifar10-hier:{missing}", "--dry-run", out=tmp_path, expect=2)
    assert f"{missing}: no such file or folder" in proc.stderr
    proc = front_door("--data", f"folder:{tmp_path}", "--dry-run", out=tmp_path, expect=2)
    assert "malformed" in proc.stderr and "folder:<root>:<coarse_map.json>" in proc.stderr


def test_a_batch_larger_than_the_training_split_is_refused_before_training(tmp_path):
    # the tiny config trains on 1000 images
    proc = front_door("--models", "unilateral", "train.batch_size=4096", out=tmp_path, expect=2)
    assert "train.batch_size=4096 is larger than the 1000 training images" in proc.stderr
    assert "set train.batch_size to at most 1000" in proc.stderr
    assert not list(tmp_path.rglob("checkpoints"))


def test_throughput_counts_the_images_trained_on(tmp_path):
    front_door("--models", "unilateral", "--seeds", "0", "train.batch_size=300", out=tmp_path, expect=0)
    (record,) = SweepStore(tmp_path / "t").read_records()[0]
    assert record["train_images"] == 2 * 900  # 2 epochs of 3 full batches; the last 100 images dropped
    assert record["train_images_per_s"] == pytest.approx(900 * 2 / record["train_time_s"])


def test_damaged_files_are_problems_of_their_run_alone(tmp_path):
    """s0: damaged record of a finished run; s1: damaged metrics of a run to resume; s2: damaged
    last.pt; s3: a run to resume with nothing wrong. The sweep names each, finishes s3, exits 1;
    aggregate.py summarises what it can and exits 1."""
    models = ["--models", "unilateral", "--seeds", "0-3", "train.epochs=1"]
    front_door(*models, out=tmp_path, expect=0)
    store = SweepStore(tmp_path / "t")
    runs = {int(r["seed"]): store.run(r["run_id"]) for r in store.read_records()[0]}
    runs[0].path("record.json").write_text('{"run_id": "trunc')
    for seed in (1, 2, 3):
        runs[seed].path("record.json").unlink()
    runs[1].path("metrics.jsonl").write_text("{not json\n")
    runs[2].path("checkpoints/last.pt").write_bytes(b"\0" * 100)

    proc = front_door(*models, out=tmp_path, expect=1)
    assert f"{runs[0].path('record.json')} is damaged" in proc.stderr and "delete it and rerun" in proc.stderr
    assert f"{runs[1].path('metrics.jsonl')} is damaged" in runs[1].path("error.txt").read_text()
    assert "cannot be read" in runs[2].path("error.txt").read_text()
    assert runs[3].is_finished() and not runs[1].is_finished() and not runs[2].is_finished()
    assert runs[0].path("record.json").read_text() == '{"run_id": "trunc'  # left for the user to decide
    assert "Left out: damaged records" in (store.root / "report.md").read_text()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["seeds"].tolist() == [1]  # s3 alone

    agg = subprocess.run(
        [sys.executable, str(REPO / "launch" / "aggregate.py"), str(store.root)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert agg.returncode == 1 and "Traceback" not in agg.stderr, agg.stderr
    assert f"{runs[0].run_id} left out of the summary" in agg.stderr and "is damaged" in agg.stderr


def test_a_damaged_checkpoint_gets_a_fused_group_of_its_own(tmp_path, tiny_plan):
    plan = tiny_plan("plan.seeds=[0,1,2]", "plan.models=[unilateral]")
    store = SweepStore(tmp_path)
    specs = [s for s in plan.runs if s.kind == "unilateral"]
    store.run(specs[1].run_id).root.mkdir(parents=True)
    store.run(specs[1].run_id).path("checkpoints").mkdir()
    store.run(specs[1].run_id).path("checkpoints/last.pt").write_bytes(b"garbage")
    groups = [[s.run_id for s in g] for g in fusion_groups(specs, 3, store)]
    assert sorted(groups) == sorted([[specs[0].run_id, specs[2].run_id], [specs[1].run_id]])


def test_write_atomic_reports_a_full_disk_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    write_atomic(path, b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=rf"disk full: writing {path} needs 3 bytes and [\d,]+ are free"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


@pytest.fixture
def small_disk(tmp_path):
    """A real 32 MiB filesystem (tmpfs) that a test can fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk, then free `leave` bytes of it."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, filler.stat().st_size - leave)
    return filler


def test_a_full_disk_is_reported_and_loses_nothing(small_disk):
    models = ["--models", "unilateral", "train.epochs=1"]
    front_door(*models, "--seeds", "0", out=small_disk, expect=0)
    store = SweepStore(small_disk / "t")
    (first,) = store.read_records()[0]
    kept = {p: p.read_bytes() for p in store.run(first["run_id"]).root.rglob("*") if p.is_file()}
    filler = fill(small_disk, leave=64 << 10)  # room for the plan and specs, none for a checkpoint

    proc = front_door(*models, "--seeds", "0,1", out=small_disk, expect=2)
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    assert error.startswith("error: disk full: writing") and "/checkpoints/" in error, error
    assert " bytes and " in error and " are free there. Fix: free space" in error, error
    assert {p: p.read_bytes() for p in kept} == kept  # the finished run is intact
    assert not list(small_disk.rglob("*.tmp"))

    filler.unlink()
    front_door(*models, "--seeds", "0,1", out=small_disk, expect=0)
    records = store.read_records()[0]
    assert len(records) == 2 and first in records  # seed 0 not retrained
    assert json.loads(store.run(first["run_id"]).path("record.json").read_text()) == first


def test_output_paths_that_cannot_be_folders_are_refused_at_startup(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("not a folder")
    proc = front_door("--dry-run", out=afile / "results", expect=2)
    assert f"error: --out {afile / 'results'} cannot be a directory: {afile} is a file. Fix: give --out" in (
        proc.stderr
    )
    proc = front_door("--dry-run", f"data_dir={afile}", out=tmp_path, expect=2)
    assert f"error: data_dir {afile} cannot be a directory: it is a file. Fix: set data_dir=" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing made


def test_negative_gpus_per_run_is_refused_where_it_is_parsed(tmp_path):
    proc = front_door("--cluster", "ray", "--gpus-per-run", "-1", "--dry-run", out=tmp_path, expect=2)
    assert "argument --gpus-per-run: -1 is out of range: give a value >= 0" in proc.stderr


@pytest.mark.parametrize(
    "flag, value, allowed",
    [
        ("--fuse", "0", ">= 1"),
        ("--workers-per-run", "0", ">= 1"),
        ("--cpus-per-run", "0", "> 0"),
        ("--gpus-per-run", "nan", ">= 0"),
        ("--num-cpus", "0", ">= 1"),
        ("--max-failures", "-2", ">= -1"),
        ("--mem-gb", "-4", "> 0"),
        ("--array-parallelism", "0", ">= 1"),
        ("--runs-per-task", "0", ">= 1"),
        ("--signal-delay-s", "-1", ">= 0"),
        ("--max-requeues", "-1", ">= 0"),
        ("--nodes", "0", ">= 1"),
        ("--cpus-per-node", "0", ">= 1"),
        ("--gpus-per-node", "-1", ">= 0"),
        ("--workers-per-run", "1.5", None),
    ],
)
def test_every_numeric_flag_has_its_range(flag, value, allowed, capsys):
    from launch.sweep import parse_args

    with pytest.raises(SystemExit) as exit:
        parse_args([flag, value, "--dry-run"])
    assert exit.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert f": error: argument {flag}: " in error, error
    assert (f"give a value {allowed}" if allowed else "is not a whole number: give one >= 1") in error, error


def test_dry_run_names_fine_classes_a_folder_map_leaves_out_or_maps_twice(tmp_path):
    from tests.test_data import _tree

    tree = _tree(tmp_path / "tree", classes=("cat", "dog", "car", "bus"), per_class=1)
    coarse_map = tmp_path / "map.json"
    coarse_map.write_text(json.dumps({"animal": ["cat", "dog"], "pet": ["dog"], "vehicle": ["car"]}))
    proc = front_door("--data", f"folder:{tree}:{coarse_map}", "--dry-run", out=tmp_path, expect=2)
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert "fine class 'dog' is listed under 'animal' and 'pet'" in error
    assert "fine classes ['bus'] are in no coarse class" in error
    assert "Fix: list each fine class of the data under exactly one coarse class" in error


def test_ffcv_with_data_it_cannot_serve_stops_before_training(tmp_path):
    pytest.importorskip("ffcv")  # without it, the sweep asks for it first
    args = ["--data", "navon", "--loader", "ffcv", f"data_dir={tmp_path / 'data'}", "train.epochs=1"]
    proc = front_door("--models", "unilateral", "--seeds", "0", *args, out=tmp_path, expect=2)
    assert (
        "error: data.loader=ffcv crops and flips 32x32 images, and this data is 32x32 with labels a flip "
        in (proc.stderr)
    )
    assert "Fix: use data.loader=memory" in proc.stderr
    assert not list(tmp_path.rglob("*.beton")) and not list(tmp_path.rglob("checkpoints"))


def test_a_rerun_with_other_settings_under_one_name_is_refused_not_pooled(tmp_path):
    """Two configurations under one --name would be pooled as seeds of one row: the second is
    refused before it trains or writes anything; more seeds under the same settings are not."""
    first = subprocess.run(
        sweep_cmd(tmp_path, "--models", "hemisphere-fine", "--seeds", "0", "train.epochs=1"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    plan_file = tmp_path / "t" / "sweep.json"
    written = plan_file.read_text()
    other = subprocess.run(
        sweep_cmd(tmp_path, "--models", "hemisphere-fine", "--seeds", "0,1", "train.epochs=2"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "pool" in other.stderr and "--name" in other.stderr
    assert plan_file.read_text() == written and len(list((tmp_path / "t" / "runs").iterdir())) == 1
    more = subprocess.run(
        sweep_cmd(tmp_path, "--models", "hemisphere-fine", "--seeds", "0,1", "train.epochs=1", "--dry-run"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert more.returncode == 0, more.stderr[-2000:]


@pytest.mark.parametrize("flag, value, allowed", [("--trials", "0", ">= 1"), ("--grace", "-1", ">= 1")])
def test_every_numeric_flag_of_tune_has_its_range(flag, value, allowed, capsys):
    from launch.tune import parse_args

    with pytest.raises(SystemExit) as exit:
        parse_args([flag, value, "--dry-run"])
    assert exit.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert f": error: argument {flag}: " in error and f"give a value {allowed}" in error, error
