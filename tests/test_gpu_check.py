"""launch/gpu_check.sh runs unattended on a short GPU lease, where nothing can be fixed in time: here
it runs end to end on the CPU with tiny settings, from `prepare` (wheels, real data) to every
stage's logs and the sweep's summary in $OUT."""

import os
import subprocess
import sys

import pandas as pd

from tests.conftest import CIFAR10_JPG, REPO

SCRIPT = str(REPO / "launch" / "gpu_check.sh")


def test_gpu_check_prepares_and_runs_every_stage(tmp_path):
    assert (CIFAR10_JPG / "cifar10-jpg.tar.gz").is_file()
    tiny = "--subset 1000 --batch-size 64 --warmup 1 --steps 1"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "DEVICE_DIR": str(tmp_path / "device"),
        "OUT": str(tmp_path / "out"),
        "RESULTS": str(tmp_path / "results"),
        "BENCH_ARGS": f"--width 0.125 {tiny} --rounds 2 --fuse 2",
        "PACK_ARGS": f"--widths 0.125 --runs 2 --threads 2 {tiny}",
        "SWEEP_ARGS": "--seeds 0 --models bilateral-specialised model.width=0.125 train.epochs=1 "
        "train.batch_size=128 data.val_size=500 data.train_subset=1000 data.test_subset=500",
    }
    prepare = subprocess.run(["bash", SCRIPT, "prepare"], env=env, capture_output=True, text=True)
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    wheels = sorted(p.name.split("-")[0] for p in (tmp_path / "device" / "wheels").glob("*.whl"))
    assert wheels == ["antlr4_python3_runtime", "omegaconf"]

    proc = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for stage in ("tests", "bench", "pack", "sweep"):
        assert f"{stage}: exit 0 after" in proc.stdout
    out = tmp_path / "out"
    files = {"env.txt", "tests.log", "bench.log", "pack.log", "sweep.log", "summary.csv", "runs.csv"}
    assert {p.name for p in out.iterdir()} == files  # a device call brings back at most 8
    assert "memory, fused K=2" in (out / "bench.log").read_text()
    assert "fastest is" in (out / "pack.log").read_text()
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert {"bilateral-specialised", "hemisphere-fine", "hemisphere-coarse"} <= set(summary.index)
    assert 0 < summary.loc["bilateral-specialised", "coarse_acc_mean"] <= 1
