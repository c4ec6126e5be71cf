"""The front door end to end: python launch/sweep.py, in a subprocess where exit codes and kills matter."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from bilateral.errors import ConfigError, DataError
from bilateral.models import build_backbone
from bilateral.store import SweepStore
from launch.sweep import main
from tests.conftest import CIFAR10_JPG, DATA_DIR, REPO, TINY, dry_run_ids
from tests.conftest import sweep_cmd as tiny_sweep_cmd


def sweep_cmd(out: Path, *args: str) -> list[str]:
    """The tiny sweep on seed 0 unless args name other seeds."""
    seeds = [] if "--seeds" in args else ["--seeds", "0"]
    return tiny_sweep_cmd(out, *seeds, *args)


def test_dry_run_prints_stages(capsys):
    assert main(["--dry-run", "--seeds", "0,1", *TINY]) == 0
    out = capsys.readouterr().out
    assert "stage 0:" in out and "stage 1:" in out and "bilateral-specialised-resnet9-s1" in out
    assert "total: 20 runs" in out  # 10 per seed with a pool of 2 and ensembles top-1, top-2
    assert main(["--dry-run", "--seeds", "0,1", "--fuse", "4", *TINY]) == 0
    out = capsys.readouterr().out  # 6 kinds x 2 seeds; the pool of 2 x 2 seeds is one group
    assert "stage 0 with --fuse 4: 6 trainings" in out and "stage 1 with --fuse 4: 5 trainings" in out
    assert "unilateral-resnet9-s0-" in out and "+3" in out


@pytest.mark.parametrize(
    "argv, error, fragment",
    [
        (["--models", "bilateral-magic"], ConfigError, "unknown model kind"),
        (["--preset", "huge"], ConfigError, "unknown preset"),
        (["--data", "imagenet"], ConfigError, "imagenet"),
        (["--seeds", "0,a"], ConfigError, "malformed seeds"),
        (["train.epochz=3"], ConfigError, "train.epochz"),
        (["--backbone", "resnet7"], ConfigError, "resnet7"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, argv, error, fragment):
    with pytest.raises(error, match=fragment):
        main([*TINY, DATA_DIR, "--out", str(tmp_path), *argv])
    assert not list(tmp_path.rglob("record.json"))


def test_coarse_map_that_is_not_a_function(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog", "car"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / split / cls / "0.png")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"animal": ["cat", "dog"], "thing": ["car", "dog"]}))
    with pytest.raises(DataError, match="dog"):
        main([*TINY, DATA_DIR, "--out", str(tmp_path / "r"), "--data", f"folder:{tmp_path}:{mapping}"])


def test_corrupt_dataset_archive(tmp_path):
    archive = tmp_path / "cifar10-jpg.tar.gz"
    archive.write_bytes((CIFAR10_JPG / "cifar10-jpg.tar.gz").read_bytes()[:2_000_000])
    with pytest.raises(DataError, match="cifar10-jpg.tar.gz"):
        main(
            [
                *TINY,
                f"data_dir={tmp_path / 'cache'}",
                "--out",
                str(tmp_path / "r"),
                "--data",
                f"cifar10-hier:{archive}",
            ]
        )


def test_error_exit_code_and_message(tmp_path):
    proc = subprocess.run([*sweep_cmd(tmp_path), "--seeds", "x"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "error: malformed seeds" in proc.stderr and "Traceback" not in proc.stderr


def test_mismatched_checkpoint_fails_that_run_only(tmp_path):
    cmd = sweep_cmd(tmp_path, "--models", "unilateral,unilateral-resnet18", "train.epochs=1")
    store = SweepStore(tmp_path / "t")
    dry_run = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, cwd=REPO)
    plan_ids = dry_run_ids(dry_run.stdout)
    victim = next(r for r in plan_ids if r.startswith("unilateral-resnet18"))
    store.run(victim).save_checkpoint(
        "last", {"model": build_backbone("vgg11", 0.125).state_dict(), "epoch": 0}
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert victim in proc.stderr and "rerun the same command" in proc.stderr
    error = store.run(victim).path("error.txt").read_text()
    assert "CheckpointError" in error and "different architecture" in error
    assert store.run(victim).has_checkpoint("last")  # nothing deleted
    finished = [r["run_id"] for r in store.read_records()[0]]
    assert len(finished) == 1 and finished[0].startswith("unilateral-resnet9")
    assert pd.read_csv(tmp_path / "summary.csv").shape[0] == 1


def test_sigkill_mid_sweep_then_rerun_matches_uninterrupted(tmp_path):
    args = ["--models", "bilateral-specialised,unilateral", "--seeds", "0", "train.epochs=3"]  # 4 runs
    reference = subprocess.run(sweep_cmd(tmp_path / "ref", *args), capture_output=True, text=True, cwd=REPO)
    assert reference.returncode == 0, reference.stderr

    runs = tmp_path / "killed" / "t" / "runs"
    proc = subprocess.Popen(
        sweep_cmd(tmp_path / "killed", *args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a run has finished and another is part-way through
        done = list(runs.glob("*/record.json"))
        partial = [
            d
            for d in runs.glob("*")
            if (d / "checkpoints" / "last.pt").exists() and not (d / "record.json").exists()
        ]
        if done and partial:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in runs.glob("*/record.json")}
    logs = {p: p.read_bytes() for p in runs.glob("*/metrics.jsonl") if (p.parent / "record.json") in finished}
    assert finished and len(finished) < 4

    rerun = subprocess.run(sweep_cmd(tmp_path / "killed", *args), capture_output=True, text=True, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # no finished run trained again
    assert all(p.read_bytes() == b for p, b in logs.items())
    records = [json.loads(p.read_text()) for p in runs.glob("*/record.json")]
    assert len(records) == 4 and any(r["resumed_from_epoch"] for r in records)

    cols = [
        "model",
        "backbone",
        "seeds",
        "fine_acc_mean",
        "fine_acc_std",
        "coarse_acc_mean",
        "coarse_acc_std",
    ]
    a = pd.read_csv(tmp_path / "ref" / "t" / "summary.csv")[cols]
    b = pd.read_csv(tmp_path / "killed" / "t" / "summary.csv")[cols]
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 4


def test_smoke_on_real_cifar10(tmp_path):
    """Real images with the smoke preset as it ships: hemispheres learn well above chance."""
    cmd = tiny_sweep_cmd(
        tmp_path,
        "--seeds",
        "0",
        "--data",
        f"cifar10-hier:{CIFAR10_JPG}",
        "--models",
        "hemisphere-fine,hemisphere-coarse",
        tiny=False,
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert summary.loc["hemisphere-fine", "fine_acc_mean"] > 0.35  # chance 0.1; measured 0.49
    assert (
        summary.loc["hemisphere-coarse", "coarse_acc_mean"] > 0.8
    )  # chance 0.6 (60% animals); measured 0.90


def test_fused_sweep_then_unfused_rerun_trains_nothing(tmp_path):
    args = ["--models", "ensemble-top2", "train.epochs=1"]
    proc = subprocess.run(
        [*sweep_cmd(tmp_path, *args), "--fuse", "2"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    store = SweepStore(tmp_path / "t")
    pool = [r for r in store.read_records()[0] if r["kind"] == "unilateral"]
    assert len(pool) == 2 and all(r["fused_with"] == sorted(p["run_id"] for p in pool) for r in pool)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert set(summary.index) == {"unilateral", "ensemble-top2"}
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "t" / "runs").glob("*/record.json")}
    assert len(finished) == 3

    rerun = subprocess.run(sweep_cmd(tmp_path, *args), capture_output=True, text=True, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr  # the same run ids: fusing is how, not what, runs train
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())

    bad = subprocess.run(
        [*sweep_cmd(tmp_path, *args), "--fuse", "0"], capture_output=True, text=True, cwd=REPO
    )
    assert bad.returncode == 2 and "argument --fuse: 0 is out of range: give a value >= 1" in bad.stderr
