"""The Ray backend against a real single-node Ray cluster on loopback (started and stopped here)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bilateral.comparison import load_comparison
from bilateral.errors import ConfigError
from ray_jobs import cluster
from tests.conftest import CIFAR10_JPG, DATA_DIR, REPO, TINY, sweep_cmd
from tests.test_tracking import events

ENV = {**os.environ, **cluster.ENV, "OMP_NUM_THREADS": "1"}
ACCURACY = ["model", "backbone", "seeds", "fine_acc_mean", "coarse_acc_mean"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("ray") / "cluster.json"
    info = cluster.start(num_cpus=4, state=state)  # 4 logical CPUs on 2 cores: driver + 2 DDP workers fit
    yield info
    cluster.stop(state)
    assert not cluster.cluster_pids(info["temp_dir"])


def sweep(out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = sweep_cmd(out, "--seeds", "0,1", *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV)
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ray_sweep_matches_local(tmp_path, ray_cluster):
    models = ["--models", "bilateral-specialised,ensemble-top2", "--seeds", "0"]
    sweep(tmp_path / "local", *models, "--device", "cpu")
    sweep(
        tmp_path / "ray", *models, "--cluster", "ray", "--device", "cpu", "--address", ray_cluster["address"]
    )
    local = pd.read_csv(tmp_path / "local" / "summary.csv")
    remote = pd.read_csv(tmp_path / "ray" / "summary.csv")
    assert list(local.columns) == list(remote.columns) and len(local) == len(remote) == 5
    # Ray runs each trial with 1 torch thread, local with 2: float reductions differ in order, so
    # accuracies agree to within a few test images (400 per run), not bit for bit.
    pd.testing.assert_frame_equal(local[ACCURACY], remote[ACCURACY], atol=0.02, check_exact=False)
    records = list((tmp_path / "ray" / "t" / "runs").glob("*/record.json"))
    assert len(records) == 2 + 1 + 2 + 1  # 2 hemispheres, bilateral, pool of 2, top-2
    # every trained run's TensorBoard events are in its own directory, and Tune writes none of its own
    for record in records:
        if "ensemble" not in record.parent.name:
            assert {"train/loss", "val/score"} <= set(events(record.parent).Tags()["scalars"])
    assert not list((tmp_path / "ray" / "t" / "ray").rglob("events.out.tfevents*"))


def job_submit(dashboard: str, env: dict, *command: str) -> subprocess.CompletedProcess:
    """`ray job submit` of this checkout with the runtime env the docs give, as a user would run it."""
    runtime_env = str(REPO / "ray_jobs" / "runtime_env.yaml")
    cmd = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", dashboard]
    cmd += ["--working-dir", str(REPO), "--runtime-env", runtime_env, "--", *command]
    env = {**env, "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES": "__pycache__"}  # ship .git (docs/ray.md)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)  # cluster.start() waited
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    return proc


def test_runtime_env_ships_every_source_file_and_git(monkeypatch):
    """Ray matches runtime_env excludes like .gitignore lines: an unanchored `data` would drop
    bilateral/data/ from every job (which then imports the node's own checkout, or fails), and
    without .git a record cannot say which commit trained it. Walked with Ray's own upload code."""
    import yaml
    from ray._private.ray_constants import get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "__pycache__")  # as docs/ray.md submits
    excludes = get_runtime_env_default_excludes()
    excludes += yaml.safe_load((REPO / "ray_jobs" / "runtime_env.yaml").read_text())["excludes"]
    shipped: set[str] = set()
    _dir_travel(REPO, [_get_excludes(REPO, excludes)], lambda p: shipped.add(str(p.relative_to(REPO))), True)
    code = ["git", "ls-files", "bilateral", "launch", "ray_jobs", "slurm", "pyproject.toml"]
    tracked = subprocess.run(code, cwd=REPO, capture_output=True, text=True).stdout.split()
    assert "bilateral/data/memory_loader.py" in tracked
    assert not [f for f in tracked if f not in shipped and (REPO / f).exists()]
    assert ".git/HEAD" in shipped
    assert not {".venv", "results/summary.csv", "data"} & shipped


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """A cluster with token auth on, as docs/ray.md tells users to run theirs."""
    from ray_jobs.auth import use_token, write_token

    folder = tmp_path_factory.mktemp("ray-token")
    token = write_token(folder / "token")
    info = cluster.start(num_cpus=2, state=folder / "cluster.json", token=token)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    use_token(token, env)
    yield info, env
    cluster.stop(folder / "cluster.json")


def test_ray_job_submit(tmp_path, token_cluster):
    """The documented job, on a token-auth cluster: the driver and its trials reach it, the code is
    the submitted copy (bilateral.data included), and the record names the checkout's commit."""
    info, env = token_cluster
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    where = job_submit(
        info["dashboard"], env, "python", "-c", "import bilateral.data as d; print(d.__file__)"
    )
    lines = [line for line in where.stdout.splitlines() if line.endswith("__init__.py")]
    assert lines and "/bilateral/data/__init__.py" in lines[0] and not lines[0].startswith(str(REPO))
    out = tmp_path / "results"
    sweep = ["--out", str(out), "--device", "cpu", "--models", "unilateral", "--seeds", "0", *TINY, DATA_DIR]
    job_submit(info["dashboard"], env, "python", "-m", "ray_jobs.submit", *sweep)
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "model"] == "unilateral" and 0 < summary.loc[0, "coarse_acc_mean"] <= 1
    (record,) = out.glob("*/runs/*/record.json")
    assert json.loads(record.read_text())["versions"]["git_commit"] == head.strip()


def ddp_spec(*overrides):
    # What DDP can truly claim to equal: VGG-11's convs (vgg11-features) have no BatchNorm (CPU DDP
    # has no SyncBatchNorm) and no dropout (vgg11's classifier has its own, drawn per rank), the
    # heads' dropout is off and plain SGD's step is linear in the gradient, so 2 workers follow one
    # worker with the same global batch up to the order of float sums. (Adam, the smoke preset's optimiser,
    # divides by the root of the squared gradient: near-zero gradients that differ in their last bits
    # move weights by up to the learning rate, which no tolerance can honestly cover.) In fp32: bf16
    # autocast (the smoke preset's, on a CPU with bf16 instructions) rounds each worker's half batch
    # differently from the whole batch, far beyond float-order differences.
    return [
        *overrides,
        "train.bf16=false",
        "--models",
        "unilateral",
        "--backbone",
        "vgg11-features",
        "model.dropout=0.0",
        "train.epochs=1",
        "optim.name=sgd",
        "optim.momentum=0.0",
        "optim.nesterov=false",
        "optim.lr=0.02",
        "optim.schedule=constant",
    ]


def test_ddp_two_workers_match_one(tmp_path, ray_cluster):
    sweep(tmp_path / "one", *ddp_spec("--device", "cpu"))
    sweep(
        tmp_path / "two",
        *ddp_spec(
            "--cluster",
            "ray",
            "--device",
            "cpu",
            "--address",
            ray_cluster["address"],
            "--workers-per-run",
            "2",
        ),
    )
    for seed in (0, 1):
        (one,) = (tmp_path / "one" / "t" / "runs").glob(f"*-s{seed}-*")
        (two,) = (tmp_path / "two" / "t" / "runs").glob(f"*-s{seed}-*")
        assert json.loads((two / "record.json").read_text())["workers"] == 2
        a = torch.load(one / "checkpoints" / "last.pt", weights_only=True)["model"]
        b = torch.load(two / "checkpoints" / "last.pt", weights_only=True)["model"]
        moved = [float((a[key] - init).abs().max()) for key, init in _initial(one).items()]
        assert max(moved) > 1e-3  # training moved the weights far more than the tolerance below
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key


def _initial(run_dir: Path) -> dict:
    """The run's initial weights, rebuilt from its spec and seed as run() builds them."""
    from bilateral.assemble import build_model
    from bilateral.plan import RunSpec

    spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
    torch.manual_seed(spec.init_seed)
    return build_model(spec, 20, 4).state_dict()


def test_a_gpu_cluster_gives_each_trial_its_own_gpu(tmp_path, monkeypatch):
    """Ray reports 2 GPUs this machine does not have (faked at Ray's resource numbers only): with no
    --gpus-per-run, each trial asks for one, and Ray hands each its own; a CPU trial sees none."""
    import ray

    from launch.sweep import parse_args, resolve_config
    from ray_jobs.backend import hide_gpus_unless_given, ray_placement, trial_resources

    for key, value in cluster.ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what a GPU node's processes inherit

    def placement(*flags):
        args = parse_args(["--cluster", "ray", "--out", str(tmp_path), *flags])
        return ray_placement(args, resolve_config(args), ray.cluster_resources())

    @ray.remote
    def visible(p):
        hide_gpus_unless_given(p)
        time.sleep(2)  # both trials hold their GPU at once
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    env = {"env_vars": {"PYTHONPATH": str(REPO)}}
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, runtime_env=env)
    try:
        gpu = placement()
        assert (gpu.device, gpu.gpus) == ("cuda", 1.0) and trial_resources(gpu) == {"CPU": 1.0, "GPU": 1.0}
        seen = [visible.options(num_cpus=1, num_gpus=1).remote(gpu) for _ in range(2)]
        assert sorted(ray.get(seen)) == ["0", "1"]
        cpu = placement("--device", "cpu")
        assert trial_resources(cpu) == {"CPU": 1.0}
        assert ray.get(visible.options(num_cpus=1, num_gpus=0).remote(cpu)) == ""
        with pytest.raises(ConfigError, match="DDP needs one whole GPU per worker"):
            placement("--workers-per-run", "2", "--gpus-per-run", "0.5")
    finally:
        ray.shutdown()


def train_worker_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"RayTrainWorker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_killed_train_worker_resumes_from_checkpoint(tmp_path, ray_cluster):
    out = tmp_path / "ft"
    cmd = sweep_cmd(
        out,
        "--seeds",
        "0",
        "--models",
        "unilateral",
        "train.epochs=4",
        "data.train_subset=3000",
        "--cluster",
        "ray",
        "--device",
        "cpu",
        "--address",
        ray_cluster["address"],
        "--workers-per-run",
        "2",
    )
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run_dir = None
    deadline = time.time() + 300
    while time.time() < deadline and run_dir is None:  # wait for the first epoch's checkpoint
        run_dir = next((d.parent.parent for d in (out / "t" / "runs").glob("*/checkpoints/last.pt")), None)
        time.sleep(0.1)
    assert run_dir is not None and not (run_dir / "record.json").exists()
    victims = train_worker_pids()
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["resumed_from_epoch"] >= 1 and record["epochs"] == 4
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]

    mtime = (run_dir / "record.json").stat().st_mtime_ns  # rerun: nothing is retrained
    subprocess.run(cmd, cwd=REPO, env=ENV, check=True, capture_output=True)
    assert (run_dir / "record.json").stat().st_mtime_ns == mtime


def test_killed_driver_then_rerun_skips_finished_runs(tmp_path, ray_cluster):
    out = tmp_path / "drv"
    cmd = sweep_cmd(
        out,
        "--seeds",
        "0,1",
        "--models",
        "unilateral",
        "train.epochs=3",
        "--cluster",
        "ray",
        "--device",
        "cpu",
        "--address",
        ray_cluster["address"],
        "--cpus-per-run",
        "3",  # one trial at a time on the 4 logical CPUs
    )
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = out / "t" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("*/record.json")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in runs.glob("*/record.json")}
    assert 1 <= len(finished) < 2
    rerun = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert len(list(runs.glob("*/record.json"))) == 2


def test_fused_groups_run_as_one_trial_each(tmp_path, ray_cluster):
    models = ["--models", "ensemble-top2", "--fuse", "2"]
    sweep(tmp_path / "local", *models, "--device", "cpu")
    sweep(
        tmp_path / "ray", *models, "--cluster", "ray", "--device", "cpu", "--address", ray_cluster["address"]
    )
    local = pd.read_csv(tmp_path / "local" / "summary.csv")
    remote = pd.read_csv(tmp_path / "ray" / "summary.csv")
    pd.testing.assert_frame_equal(local[ACCURACY], remote[ACCURACY], atol=0.02, check_exact=False)
    records = [json.loads(p.read_text()) for p in (tmp_path / "ray" / "t" / "runs").glob("*/record.json")]
    pool = [r for r in records if r["kind"] == "unilateral"]
    assert len(pool) == 4 and all(len(r["fused_with"]) == 2 for r in pool)  # 2 seeds x pool of 2
    assert {tuple(r["fused_with"]) for r in pool} == {
        tuple(sorted(r["run_id"] for r in pool if r["seed"] == seed)) for seed in (0, 1)
    }
    trials = {p.name for p in (tmp_path / "ray" / "t" / "ray").glob("stage*/*") if p.is_dir()}
    fused_trials = {t for t in trials if t.endswith("+1")}  # <first run id>+<other members>
    assert len(fused_trials) == 2, trials


def test_a_ranks_own_error_is_kept_over_rays_summary(tmp_path):
    """A failing rank writes its traceback to error.txt during the stage; Ray's one-line summary of
    the trial must not replace it. Without one, Ray's error is what error.txt keeps."""
    from bilateral.store import SweepStore
    from ray_jobs.backend import _failure_text

    store = SweepStore(tmp_path)
    run = store.run("hemisphere-fine-s0-x")
    run.root.mkdir(parents=True)
    run.write_error("rank 1 of 2 failed: RuntimeError: injected")
    assert _failure_text(run, RuntimeError("Trial failed")).startswith("rank 1 of 2 failed")
    assert "rank 1 of 2 failed" in run.path("error.txt").read_text()
    run.retire_error()  # the next stage's start
    assert _failure_text(run, RuntimeError("Trial failed")) == "RuntimeError: Trial failed"
    assert run.path("error.txt").read_text() == "RuntimeError: Trial failed"
    run.path("error.txt").unlink()
    assert "reported no error" in _failure_text(run, None)


def test_a_cluster_with_token_auth_refuses_a_sweep_without_its_token(tmp_path):
    """--address to a cluster that requires a token: without it, one clear error before anything
    trains (Ray itself says only 'Failed to connect'); with RAY_AUTH_TOKEN_PATH, the sweep runs."""
    from ray_jobs.auth import write_token

    token = write_token(tmp_path / "token")
    state = tmp_path / "cluster.json"
    info = cluster.start(num_cpus=2, state=state, token=token)
    try:
        base = {k: v for k, v in ENV.items() if not k.startswith("RAY_AUTH")}
        (tmp_path / "home").mkdir()
        run = [
            "--cluster",
            "ray",
            "--device",
            "cpu",
            "--address",
            info["address"],
            "--models",
            "hemisphere-fine",
        ]
        cmd = sweep_cmd(tmp_path / "out", *run, "--seeds", "0", "train.epochs=1")
        without = {**base, "HOME": str(tmp_path / "home"), "RAY_AUTH_MODE": "disabled"}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=without, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert f"error: could not join the Ray cluster at {info['address']}" in proc.stderr
        assert "RAY_AUTH_MODE is disabled" in proc.stderr and "RAY_AUTH_TOKEN_PATH=" in proc.stderr
        with_token = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=with_token, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(list((tmp_path / "out" / "t" / "runs").glob("hemisphere-fine-*/record.json"))) == 1
    finally:
        cluster.stop(state)


def test_the_callosal_comparison_runs_on_ray(tmp_path, ray_cluster):
    rows = ",".join(r.name for r in load_comparison("callosal").rows if r.base == "callosal")
    args = [
        "--cluster",
        "ray",
        "--device",
        "cpu",
        "--address",
        ray_cluster["address"],
        "--experiment",
        "callosal",
    ]
    args += ["--models", rows, "--seeds", "0"]
    proc = sweep(tmp_path, *args, "--data", f"cifar10-hier4:{CIFAR10_JPG}", "train.epochs=1")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert set(rows.split(",")) <= set(summary.index), proc.stderr[-2000:]
    assert (summary.loc[rows.split(","), "seeds"] == 1).all() and len(rows.split(",")) == 6


def test_vit_hemispheres_on_navon_run_on_ray(tmp_path, ray_cluster):
    rows = ["specialised-local-vit", "unilateral-vit"]
    args = [
        "--cluster",
        "ray",
        "--device",
        "cpu",
        "--address",
        ray_cluster["address"],
        "--experiment",
        "substrate",
    ]
    proc = sweep(
        tmp_path, *args, "--models", ",".join(rows), "--data", "navon", "train.epochs=1", "--seeds", "0"
    )
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(rows) <= set(summary["model"]), proc.stderr[-2000:]
    trained = set(zip(summary["model"], summary["backbone"], summary["seeds"], strict=True))
    assert {("hemisphere-coarse", "vit-small", 1), ("unilateral-vit", "vit-small", 1)} <= trained


def test_a_runs_own_traceback_is_kept_whatever_the_storage_clock_says(tmp_path):
    """error.txt on shared storage carries the file server's clock: written 5 s 'before' the stage
    started by the driver's clock, a rank's traceback was replaced by Ray's summary. An error.txt is
    now this stage's because the stage retired the earlier one when it began, not by its time."""
    from bilateral.store import SweepStore
    from ray_jobs.backend import _failure_text

    run = SweepStore(tmp_path).run("unilateral-resnet9-s0-00000000")
    run.path("error.txt").parent.mkdir(parents=True)
    run.write_error("an earlier attempt's error")
    run.retire_error()  # what a stage does to its runs before Tune starts them
    assert not run.path("error.txt").exists()
    assert run.path("error.previous.txt").read_text() == "an earlier attempt's error"
    started = time.time()
    run.write_error("Traceback ...\nRuntimeError: CUDA error: an illegal memory access was encountered")
    os.utime(run.path("error.txt"), (started - 5, started - 5))  # the file server's clock is behind
    text = _failure_text(run, RuntimeError("Ray: the actor died"))
    assert "illegal memory access" in text and "(Ray: RuntimeError)" in text
    assert "illegal memory access" in run.path("error.txt").read_text()
    run.retire_error()
    assert _failure_text(run, None) == "the Ray trial ended without finishing this run and reported no error"
