"""A core install (`pip install -e .`, no extras) runs local sweeps and the benchmarks; asking for a
part whose extra is missing is a clear error that names the extra, before anything trains.

The extras are hidden from a subprocess by a sitecustomize that blocks their imports."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from bilateral.extras import EXTRA_OF
from tests.conftest import REPO, sweep_cmd


@pytest.fixture
def core_only(tmp_path):
    """Environment of a Python that cannot import any optional extra."""
    site = tmp_path / "site"
    site.mkdir()
    blocked = ", ".join(repr(m) for m in EXTRA_OF)
    (site / "sitecustomize.py").write_text(f"import sys\nfor m in ({blocked},):\n    sys.modules[m] = None\n")
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}


@pytest.mark.parametrize("module", list(EXTRA_OF))
def test_the_extras_are_really_hidden(core_only, module):
    probe = [sys.executable, "-c", f"import {module}"]
    proc = subprocess.run(probe, env=core_only, capture_output=True, text=True)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_a_local_sweep_needs_no_extra(tmp_path, core_only):
    out = tmp_path / "results"
    cmd = sweep_cmd(out, "--seeds", "0", "--models", "unilateral", "train.epochs=1")
    proc = subprocess.run(cmd, env=core_only, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["model"]) == ["unilateral"] and summary["fine_acc_mean"].between(0, 1).all()


@pytest.mark.parametrize(
    "args, extra",
    [
        (["--cluster", "ray"], "ray"),
        (["--cluster", "slurm"], "slurm"),
        (["--loader", "ffcv"], "ffcv"),
        (["--analyze"], "analysis"),
    ],
)
def test_a_missing_extra_is_named_before_anything_trains(tmp_path, core_only, args, extra):
    out = tmp_path / "results"
    cmd = sweep_cmd(out, "--seeds", "0", "--models", "unilateral", *args)
    proc = subprocess.run(cmd, env=core_only, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"pip install -e '.[{extra}]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.rglob("record.json"))


def test_analysis_without_its_extra(tmp_path, core_only):
    cmd = [sys.executable, str(REPO / "launch" / "analyze.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=core_only, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "pip install -e '.[analysis]'" in proc.stderr


def test_the_loader_benchmark_leaves_out_ffcv_and_says_why(tmp_path, core_only):
    cmd = [sys.executable, str(REPO / "launch" / "bench.py"), "loaders", "--subset", "500"]
    cmd += ["--data-dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=core_only, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped: the ffcv benchmark needs ffcv" in proc.stdout
    table = proc.stdout.split("| loader")[1]
    assert "| torch" in table and "| memory" in table and "ffcv" not in table


def test_an_extra_older_than_pyproject_allows_is_named(monkeypatch):
    """The Ray backend uses token auth (ray.exceptions.AuthenticationError, RAY_AUTH_MODE), new in Ray
    2.52: pyproject says so, and an older installed Ray is an error naming the floor, not an
    ImportError once --cluster ray starts."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    from bilateral.errors import ConfigError
    from bilateral.extras import require

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (ray,) = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["ray"]]
    assert "2.52.0" in ray.specifier and "2.51.0" not in ray.specifier
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.40.0" if name == "ray" else real(name))
    with pytest.raises(ConfigError, match=r"ray 2\.40\.0 is installed, but bilateral needs ray>=2\.52"):
        require("ray", "--cluster ray")
    monkeypatch.setattr(metadata, "version", real)
    assert require("ray", "--cluster ray").__version__ in ray.specifier
