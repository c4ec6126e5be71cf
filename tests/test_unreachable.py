"""Addresses that never answer (a Ray cluster, an MLflow server, W&B online, the Slurm controller)
are refused within seconds, before any training, naming the address, what was tried and the fix.
'Silent' is a port that accepts connections and never replies, the worst case: a client waits."""

import os
import shutil
import socket
import subprocess
import time

import pytest

from bilateral.errors import ConfigError
from ray_jobs.cluster import free_port
from ray_jobs.reach import check_ray_address
from tests.conftest import REPO, sweep_cmd

ONE_RUN = ["--models", "unilateral", "--seeds", "0"]


@pytest.fixture
def silent_port():
    """A port whose connections the kernel completes but nobody ever reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def refused(out, *args: str, env: dict | None = None) -> str:
    started = time.monotonic()
    proc = subprocess.run(
        sweep_cmd(out, *ONE_RUN, *args),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    took = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert took < 90, f"{took:.0f} s"  # the start of Python and torch on a loaded 2-core machine included
    assert not list(out.rglob("checkpoints"))  # before any training
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    return error


def test_the_checks_themselves_end_within_seconds(silent_port):
    from bilateral.reach import check_mlflow

    for check, address in (
        (check_ray_address, f"127.0.0.1:{silent_port}"),
        (check_ray_address, f"127.0.0.1:{free_port()}"),
        (check_mlflow, f"http://127.0.0.1:{silent_port}"),
    ):
        started = time.monotonic()
        with pytest.raises(ConfigError, match=f"at {address}.* does not answer: .* got .*Fix: "):
            check(address)
        assert time.monotonic() - started < 30


def test_ray_address_where_no_cluster_answers(tmp_path, silent_port):
    error = refused(tmp_path, "--cluster", "ray", "--device", "cpu", "--address", f"127.0.0.1:{silent_port}")
    assert f"the Ray cluster at 127.0.0.1:{silent_port} does not answer: a gRPC handshake with" in error
    assert "Fix: give the address `ray status` prints on the head node" in error


def test_mlflow_server_that_never_answers(tmp_path, silent_port):
    url = f"http://127.0.0.1:{silent_port}"
    error = refused(tmp_path, f"train.mlflow={url}")
    assert f"the MLflow tracking server at {url} does not answer: GET {url}/health got 'no answer" in error
    assert "Fix: correct train.mlflow, or start the server" in error


def test_wandb_online_without_its_server(tmp_path):
    base = f"http://127.0.0.1:{free_port()}"
    error = refused(tmp_path, "train.wandb=online", env={"WANDB_BASE_URL": base})
    assert f"W&B's server at {base} does not answer: GET {base} got 'Connection refused'" in error
    assert "or log offline: train.wandb=offline" in error


@pytest.mark.skipif(shutil.which("sinfo") is None, reason="Slurm's client commands are not installed")
def test_slurm_controller_that_cannot_be_reached(tmp_path):
    conf = tmp_path / "slurm.conf"  # a controller on a port where nothing listens
    conf.write_text(
        f"ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={free_port()}\n"
        "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=debug Nodes=ALL Default=YES State=UP\n"
    )
    error = refused(tmp_path / "out", "--cluster", "slurm", "--device", "cpu", env={"SLURM_CONF": str(conf)})
    assert "Slurm controller" in error and "`sinfo`" in error
    assert "Fix: start the controller, or point SLURM_CONF at the right slurm.conf" in error
