"""setup.sh's choices, read from its --dry-run (which installs nothing): which torch, and FFCV only
where its build libraries can be had."""

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO


def dry_run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "setup.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def pip_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if "pip install" in line]


def test_torch_index_and_keep():
    default = pip_lines(dry_run({}))
    assert "torch==2.14.1 torchvision==0.29.1" in default[0] and "--index-url" not in default[0]
    cu126 = pip_lines(dry_run({"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu126"}))
    assert "--index-url https://download.pytorch.org/whl/cu126 torch==2.14.1" in cu126[0]
    assert "--index-url" not in cu126[1]  # the project's own dependencies still come from PyPI
    kept = pip_lines(dry_run({"TORCH_SPEC": "keep"}))
    assert not any("torch==" in line for line in kept) and "-e .[all]" in kept[0]


def test_no_root_no_apt_installs_everything_but_ffcv(tmp_path: Path):
    """A RHEL-like login node: pkg-config finds no OpenCV, the user is not root, sudo refuses."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {"pkg-config": "exit 1", "sudo": "exit 1", "id": "echo 1000"}.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    proc = dry_run({"PATH": f"{stubs}:{os.environ['PATH']}"})
    lines = pip_lines(proc)
    assert any("-e .[all-but-ffcv]" in line for line in lines)
    assert not any("apt-get" in line for line in proc.stdout.splitlines())
    assert "everything but FFCV" in proc.stderr and "opencv-devel turbojpeg-devel" in proc.stderr
