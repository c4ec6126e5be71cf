"""Where a run executes: its device, the arithmetic it computes in, and what produced it.

Analysis, evaluation and the benchmark use these too, without entering training. "fp32" on an
Ampere or newer GPU is not IEEE fp32 throughout: PyTorch lets cuDNN run fp32 convolutions in TF32
by default, so a record that says fp32 says which (tf32_state).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

import bilateral
from bilateral import cuda_build
from bilateral.errors import ConfigError
from bilateral.placement import check_device
from bilateral.plan import RunSpec


def resolve_device(name: str) -> torch.device:
    """auto, cpu, cuda or cuda:N -> the device; a GPU that torch cannot see is a clear error here, not
    a RuntimeError deep inside the first forward pass."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if count == 0 or (dev.index or 0) >= count:
            raise ConfigError(
                f"device {name!r}, but torch sees {count} CUDA device(s) (CUDA_VISIBLE_DEVICES="
                f"{visible!r}, torch {torch.__version__}, CUDA build {torch.version.cuda}): run on a GPU "
                f"node or pass --device cpu{cuda_build.reason()}"
            )
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    return dev


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16, or AMX's tiles with AMX-BF16), where
    oneDNN runs bf16 convolutions natively; without them PyTorch emulates bf16, slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def choose_precision(spec: RunSpec, dev: torch.device) -> tuple[str, str]:
    """("bf16" | "fp32", why): bf16 autocast for training only where the device computes bf16
    natively (GPUs of compute capability 8.0 or newer, CPUs with AVX512-BF16 or AMX); elsewhere
    PyTorch would emulate it slowly, so the run trains in fp32 and says why."""
    if not spec.train.bf16:
        return "fp32", ""
    if dev.type == "cpu":
        if cpu_computes_bf16():
            return "bf16", ""
        return "fp32", (
            "train.bf16=true, but this CPU has no bf16 instructions (AVX512-BF16 or AMX): training in "
            "fp32 (set train.bf16=false to silence this)"
        )
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16", ""
    major, minor = torch.cuda.get_device_capability(dev)
    return "fp32", (
        f"train.bf16=true, but {torch.cuda.get_device_name(dev)} (compute capability {major}.{minor}) has "
        "no bf16 kernels: training in fp32"
    )


def tf32_state(dev: torch.device) -> dict[str, bool] | None:
    """{conv, matmul}: whether fp32 convolutions and matmuls of this run compute in TF32 (GPUs of
    compute capability 8.0 and newer, as torch.backends is set); None on a CPU, which has no TF32."""
    if dev.type != "cuda":
        return None
    ampere = torch.cuda.get_device_capability(dev)[0] >= 8
    return {
        "conv": ampere and torch.backends.cudnn.allow_tf32,
        "matmul": ampere and torch.backends.cuda.matmul.allow_tf32,
    }


def autocast(precision: str, dev: torch.device):
    """Training steps only: evaluation runs in fp32, so argmax, checkpoint choice, ensemble means and
    predictions.npz see unrounded logits."""
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def versions() -> dict:
    """What produced a run: the code's commit (and whether it had local changes) and library versions."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "bilateral": bilateral.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
