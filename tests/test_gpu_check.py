"""launch/gpu_check.sh runs unattended on a short GPU lease, where nothing can be fixed in time: here
it runs end to end on the CPU with tiny settings, from `prepare` (wheels, real data) to every
stage's logs and the sweep's summary in $OUT; and it refuses stages whose limits overrun one call."""

import os
import subprocess
import sys
from pathlib import Path

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
        # a CPU on a shared machine: the stages' tiny settings get the limits of no device call
        **{f"{stage}_SECONDS": "300" for stage in ("TESTS", "BENCH", "PACK", "SWEEP")},
        "CALL_SECONDS": "1200",
        "BENCH_ARGS": f"--width 0.125 {tiny} --rounds 2 --fuse 2",
        "PACK_ARGS": f"--widths 0.125 --runs 2 --threads 2 {tiny}",
        "SWEEP_ARGS": "--seeds 0 --models bilateral-specialised model.width=0.125 train.epochs=1 "
        "train.batch_size=128 data.val_size=500 data.train_subset=1000 data.test_subset=500",
    }
    prepare = subprocess.run(["bash", SCRIPT, "prepare"], env=env, capture_output=True, text=True)
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    wheels = sorted(p.name.split("-")[0] for p in (tmp_path / "device" / "wheels").glob("*.whl"))
    assert wheels == ["antlr4_python3_runtime", "omegaconf"]

    proc = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=1300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    stages = ("tests", "bench", "pack", "sweep")
    for n, stage in enumerate(stages):  # after every stage, the outcomes so far
        report = proc.stdout.split(f"=== outcomes after {stage}:\n")[1].split("===")[0]
        assert [line.split(":")[0].strip() for line in report.splitlines()] == list(stages[: n + 1])
        assert f"{stage}: exit 0 after" in report
    out = tmp_path / "out"
    files = {"env.txt", "tests.log", "bench.log", "pack.log", "sweep.log", "summary.csv", "runs.csv"}
    assert {p.name for p in out.iterdir()} == files  # a device call brings back at most 8
    assert "memory, fused K=2" in (out / "bench.log").read_text()
    assert "fastest is" in (out / "pack.log").read_text()
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert {"bilateral-specialised", "hemisphere-fine", "hemisphere-coarse"} <= set(summary.index)
    assert 0 < summary.loc["bilateral-specialised", "coarse_acc_mean"] <= 1


def script(tmp_path, *stages: str, **limits: str) -> subprocess.CompletedProcess:
    """The script with no wheels prepared: it stops at once, on its budget or on the missing wheels."""
    env = {**os.environ, **limits, "DEVICE_DIR": str(tmp_path / "device"), "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", SCRIPT, *stages], env=env, capture_output=True, text=True, timeout=30)


def test_gpu_check_refuses_stages_that_overrun_one_call(tmp_path):
    proc = script(tmp_path)  # all four stages
    assert proc.returncode == 2
    assert proc.stdout.startswith(
        "refusing to start: the stages' limits (tests 150 s, bench 240 s, pack 120 s, sweep 150 s) "
        "add up to 660 s, over CALL_SECONDS=570"
    )
    assert not (tmp_path / "out").exists()  # nothing ran
    proc = script(tmp_path, "tests", "bench", BENCH_SECONDS="500")
    assert proc.returncode == 2 and "(tests 150 s, bench 500 s) add up to 650 s" in proc.stdout
    assert script(tmp_path, "pack", "sweep", CALL_SECONDS="269").returncode == 2


def test_gpu_check_default_limits_fit_the_two_suggested_calls(tmp_path):
    for stages, total in ((("tests", "bench"), 390), (("pack", "sweep"), 270)):
        proc = script(tmp_path, *stages)
        assert f"({total} s of CALL_SECONDS=570)" in proc.stdout
        assert "no " + str(tmp_path / "device") + "/wheels" in proc.stdout  # past the budget, to the wheels
    header = Path(SCRIPT).read_text()
    assert "run(command='bash launch/gpu_check.sh tests bench', carry=['.device'], timeout_s=420)" in header
    assert "run(command='bash launch/gpu_check.sh pack sweep', carry=['.device'], timeout_s=300)" in header


def test_gpu_check_refuses_a_gpu_run_whose_torch_sees_no_gpu_or_lacks_a_module(tmp_path):
    """On this CPU-only machine DEVICE=cuda is what a CPU-only torch on a GPU node looks like: the GPU
    tests would all skip and the stage report success. Refused before any stage, as is a missing
    module (torchvision hidden here), each naming its fix."""
    (tmp_path / "device" / "wheels").mkdir(parents=True)
    blocked = tmp_path / "blocked"
    (blocked / "torchvision").mkdir(parents=True)
    (blocked / "torchvision" / "__init__.py").write_text("raise ImportError('no torchvision here')\n")
    python = tmp_path / "python"  # the GPU image's python, without torchvision
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{blocked}:$PYTHONPATH" exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "DEVICE": "cuda", "DEVICE_DIR": str(tmp_path / "device"),
           "OUT": str(tmp_path / "out")}  # fmt: skip
    proc = subprocess.run(["bash", SCRIPT, "tests"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "preflight failed: DEVICE=cuda but torch" in proc.stdout and "sees no GPU" in proc.stdout
    assert "preflight failed: import torchvision: ImportError: no torchvision here" in proc.stdout
    assert "refusing to start" in proc.stdout
    assert not (tmp_path / "out" / "tests.log").exists()  # nothing ran
