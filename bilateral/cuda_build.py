"""Does this torch build run on this machine's GPUs? Checked before anything trains.

PyPI's default torch wheel is built for one CUDA major version (2.14.1: CUDA 13.0, kernels for
compute capability 7.5 and newer). Its CUDA needs a minimum NVIDIA driver, and its kernels a GPU
they were compiled for; a mismatch makes torch see no GPU (an old driver) or fail at the first
kernel ("no kernel image is available"). nvidia-smi reports what the machine has; this compares.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

# The oldest driver each CUDA major version runs on (NVIDIA's minor-version compatibility table).
DRIVER_FLOOR = {11: (450, 80), 12: (525, 60), 13: (580, 0)}
# Where to get a torch built for an older driver or GPU (setup.sh reads TORCH_INDEX_URL).
FIX = (
    "reinstall torch built for this machine: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 "
    "bash setup.sh (CUDA 12.6: driver 525+, compute capability 5.0 and newer), or upgrade the driver"
)


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it."""

    name: str
    driver: tuple[int, ...]
    capability: tuple[int, int]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def nvidia_smi_gpus() -> list[Gpu] | None:
    """The GPUs nvidia-smi lists; None where there is no nvidia-smi or it fails (no driver loaded)."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        name, driver, capability = (field.strip() for field in line.rsplit(",", 2))
        major, minor = _version(capability)[:2]
        gpus.append(Gpu(name, _version(driver), (major, minor)))
    return gpus


def runs_on(capability: tuple[int, int], archs: list[str]) -> bool:
    """Whether a build with these arch flags (torch.cuda.get_arch_list()) has kernels for a GPU:
    a cubin of the same major version and no newer minor, or PTX of an older or equal version."""
    major, minor = capability
    for arch in archs:
        kind, _, number = arch.partition("_")
        arch_major, arch_minor = int(number[:-1]), int(number[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= capability:
            return True
    return False


def problems(gpus: list[Gpu], torch_cuda: str | None, archs: list[str]) -> list[str]:
    """What stops torch (built for CUDA torch_cuda, with kernels archs) from using these GPUs."""
    if not gpus:
        return []
    if torch_cuda is None:
        return [f"nvidia-smi lists {len(gpus)} GPU(s), but this torch is a CPU-only build"]
    found = []
    cuda_major = _version(torch_cuda)[0]
    floor = DRIVER_FLOOR.get(cuda_major)
    driver = gpus[0].driver
    if floor is not None and driver[:2] < floor:
        found.append(
            f"the NVIDIA driver is {'.'.join(map(str, driver))}, but this torch is built for CUDA "
            f"{torch_cuda}, which needs driver {floor[0]} or newer"
        )
    for gpu in {g.name: g for g in gpus}.values():
        if not runs_on(gpu.capability, archs):
            found.append(
                f"{gpu.name} has compute capability {gpu.capability[0]}.{gpu.capability[1]}, but this torch "
                f"has kernels for {' '.join(archs)} only"
            )
    return found


def check(torch_must_see: bool = True) -> list[str]:
    """problems() of this machine: empty where nvidia-smi lists no GPU or torch can use every one.
    torch_must_see: a GPU that nvidia-smi lists but torch does not see is a problem (it is not on a
    login node whose jobs run elsewhere, or under CUDA_VISIBLE_DEVICES="")."""
    import torch

    gpus = nvidia_smi_gpus()
    if not gpus:
        return []
    found = problems(gpus, torch.version.cuda, torch.cuda.get_arch_list())
    if not found and torch_must_see and torch.cuda.device_count() == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        found.append(
            f"nvidia-smi lists {len(gpus)} GPU(s), but torch sees none (CUDA_VISIBLE_DEVICES={visible!r})"
        )
    return found


def explain(found: list[str]) -> str:
    """One message: every problem, torch's version, and the fix."""
    import torch

    return f"{'; '.join(found)} (torch {torch.__version__}). Fix: {FIX}"


def reason() -> str:
    """Why torch sees no GPU here, when nvidia-smi can tell ('' when it cannot): for error messages."""
    found = check(torch_must_see=False)
    return f". Likely cause: {explain(found)}" if found else ""
