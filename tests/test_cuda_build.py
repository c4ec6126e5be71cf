"""The torch build against the machine's GPUs (bilateral/cuda_build.py), with nvidia-smi faked: a
mismatch stops a sweep before anything is written or submitted, naming the fix."""

import os
from pathlib import Path

import pytest
import torch

from bilateral import cuda_build
from bilateral.errors import ConfigError
from launch.sweep import check_torch_build, main
from tests.conftest import DATA_DIR, TINY

V100_OLD_DRIVER = "Tesla V100-SXM2-32GB, 550.54.15, 7.0"
H100_NEW_DRIVER = "NVIDIA H100 80GB HBM3, 580.65.06, 9.0"


def fake_nvidia_smi(tmp_path: Path, monkeypatch, *lines: str) -> None:
    """An nvidia-smi first on PATH that answers the query with lines (name, driver, capability)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    body = "\n".join(f"echo '{line}'" for line in lines)
    query = "*--query-gpu=name,driver_version,compute_cap*"
    script.write_text(f'#!/bin/sh\ncase "$*" in {query}) ;; *) exit 9;; esac\n{body}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_old_driver_and_old_gpu_stop_the_sweep_before_it_starts(tmp_path, monkeypatch):
    """PyPI's torch 2.14.1 is the CUDA 13.0 build (driver 580+, sm_75+): on a 550 driver with V100s
    the sweep stops with both reasons and the reinstall command; nothing is written."""
    if torch.version.cuda is None or int(torch.version.cuda.split(".")[0]) < 13:
        pytest.fail(f"this test expects setup.sh's CUDA 13 torch, not {torch.__version__}")
    fake_nvidia_smi(tmp_path, monkeypatch, V100_OLD_DRIVER, V100_OLD_DRIVER)
    out = tmp_path / "results"
    with pytest.raises(ConfigError) as info:
        main([*TINY, DATA_DIR, "--out", str(out), "--seeds", "0"])
    text = str(info.value)
    assert "driver is 550.54.15" in text and "needs driver 580" in text
    assert "compute capability 7.0" in text and "sm_75" in text
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126" in text and "--device cpu" in text
    assert not out.exists()
    check_torch_build("local", "cpu")  # the same machine with --device cpu trains on the CPU, as asked


def test_gpus_torch_cannot_see_stop_a_local_sweep_not_a_cluster_one(tmp_path, monkeypatch):
    """A right driver and GPU, but torch sees none (here: no GPU at all behind the fake nvidia-smi):
    --cluster local --device auto would train everything on the CPU; a login node's GPUs need not
    be visible, so there the check passes."""
    fake_nvidia_smi(tmp_path, monkeypatch, H100_NEW_DRIVER)
    assert cuda_build.check(torch_must_see=False) == []
    found = cuda_build.check(torch_must_see=True)
    assert found and "torch sees none" in found[0]
    with pytest.raises(ConfigError, match="nvidia-smi lists 1 GPU"):
        main([*TINY, DATA_DIR, "--out", str(tmp_path / "r"), "--seeds", "0", "--models", "unilateral"])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "capability, archs, runs",
    [
        ((7, 0), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], False),  # V100 on cu130
        ((8, 9), ["sm_75", "sm_80", "sm_86", "sm_90"], True),  # L40: sm_86 cubins run on 8.9
        ((9, 0), ["sm_75", "sm_80", "sm_86"], False),  # H100: no sm_9x cubin, no PTX
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX for 8.0 is JIT-compiled for 9.0
        ((6, 0), ["sm_50", "sm_60", "sm_70"], True),  # P100 on a cu126 build
    ],
)
def test_which_builds_have_kernels_for_a_gpu(capability, archs, runs):
    assert cuda_build.runs_on(capability, archs) is runs


def test_driver_floor_per_cuda_major():
    gpu = cuda_build.Gpu("A100", (535, 104, 5), (8, 0))
    assert cuda_build.problems([gpu], "12.6", ["sm_80"]) == []
    assert "needs driver 580" in cuda_build.problems([gpu], "13.0", ["sm_80"])[0]
    assert "CPU-only build" in cuda_build.problems([gpu], None, [])[0]


def test_a_local_sweep_on_a_machine_of_8_gpus_says_7_stay_idle():
    """--cluster local trains one run at a time on GPU 0; it says so at start and names the fix."""
    from bilateral.placement import Offer, place
    from launch.local import idle_gpus_note

    eight = Offer(8, 128, "this machine (torch.cuda)")
    note = idle_gpus_note(eight, place("auto", None, None, 1, eight, 128))
    assert "has 8 GPUs" in note and "other 7 stay idle" in note and "--cluster ray --num-cpus 128" in note
    one = Offer(1, 16, "this machine (torch.cuda)")
    assert idle_gpus_note(one, place("auto", None, None, 1, one, 16)) == ""
    assert idle_gpus_note(eight, place("cpu", None, None, 1, eight, 128)) == ""
