"""--cluster slurm end to end, against a real single-node Slurm cluster on this machine.

The session fixture starts slurmctld, slurmd, munged, slurmdbd and MariaDB with slurm/start-cluster.sh
(installing the Debian packages the first time; needs root) and stops exactly those daemons at the
end with slurm/stop-cluster.sh, unless the cluster was already up before the tests. Nothing here
mocks Slurm: sweeps go through `python launch/sweep.py --cluster slurm` and sbatch / squeue / sacct.
Set BILATERAL_SKIP_SLURM=1 to skip these tests.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bilateral.comparison import load_comparison
from bilateral.errors import ConfigError
from tests.conftest import CIFAR10_JPG, REPO, dry_run_ids, sweep_cmd

START, STOP = REPO / "slurm" / "start-cluster.sh", REPO / "slurm" / "stop-cluster.sh"
# CPU-only cluster of 2 cores: one core per run, so two runs train at once
ON_SLURM = ["--cluster", "slurm", "--device", "cpu", "--cpus-per-run", "1", "--time", "15"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the local reference uses one thread, like a Slurm task


def sweep(out: Path, *args: str, wait: bool = True, timeout: float = 300):
    cmd = sweep_cmd(out, "--seeds", "0", *args)
    if not wait:
        return subprocess.Popen(
            cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def plan_ids(*args: str) -> list[str]:
    out = sweep(Path("/nonexistent"), *args, "--dry-run").stdout
    return dry_run_ids(out)


def status(sweep_dir: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "sweep.py"), "--status", str(sweep_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def ledger(sweep_dir: Path) -> dict[str, str]:
    """{run_id: Slurm job id} from <sweep>/slurm/jobs.json."""
    path = sweep_dir / "slurm" / "jobs.json"
    return {r: e["job"] for r, e in json.loads(path.read_text())["runs"].items()} if path.is_file() else {}


def cluster_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return proc.returncode == 0 and "UP" in proc.stdout


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.environ.get("BILATERAL_SKIP_SLURM") == "1":
        pytest.skip("BILATERAL_SKIP_SLURM=1")
    was_up = cluster_up()
    if not was_up and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip("starting the test Slurm cluster needs root on Debian (slurm/start-cluster.sh)")
    started = time.time()
    proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"slurm/start-cluster.sh failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"\nSlurm cluster ready in {time.time() - started:.1f}s (already up: {was_up})")
    yield
    if not was_up:
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- no cluster needed


def test_time_and_sbatch_parsing():
    from slurm.backend import parse_minutes, parse_sbatch

    assert [parse_minutes(t) for t in ("90", "1:30", "2:00:00", "1-0", "1-02:30", "0-0:0:61")] == [
        90,
        2,
        120,
        1440,
        1590,
        2,
    ]
    for bad in ("", "1h", "0", "-5"):
        with pytest.raises(ConfigError, match="--time"):
            parse_minutes(bad)
    assert parse_sbatch(["constraint=a100", "--exclusive", "mail_type=END"]) == {
        "constraint": "a100",
        "exclusive": True,
        "mail_type": "END",
    }


def test_bad_slurm_flags_are_clear_errors(tmp_path):
    proc = sweep(tmp_path, *ON_SLURM, "--workers-per-run", "2", "--runs-per-task", "2")
    assert proc.returncode == 2 and "do not combine" in proc.stderr, proc.stderr
    proc = sweep(tmp_path, *ON_SLURM, "--gpus-per-run", "1")
    assert proc.returncode == 2 and "--device cpu with --gpus-per-run 1" in proc.stderr, proc.stderr
    proc = sweep(tmp_path, *ON_SLURM, "--time", "soon")
    assert proc.returncode == 2 and "--time 'soon'" in proc.stderr, proc.stderr
    assert not (tmp_path / "t" / "slurm").exists()


# ---------------------------------------------------------------- real cluster


def test_flags_map_to_sbatch(slurm_cluster, tmp_path):
    import submitit

    from launch.sweep import parse_args, resolve_config
    from slurm.backend import SlurmOptions, parse_sinfo

    args = parse_args(
        [
            *("--cluster", "slurm", "--partition", "gpu", "--account", "lab", "--qos", "high"),
            *("--time", "1-02:30:00", "--gpus-per-run", "1", "--cpus-per-run", "8", "--mem-gb", "32"),
            *("--runs-per-task", "2", "--array-parallelism", "4", "--signal-delay-s", "90"),
            *("--sbatch", "constraint=a100", "--sbatch", "exclusive", "--setup", "module load cuda"),
            *("--out", str(tmp_path)),
        ]
    )
    offer = parse_sinfo("cpu*|(null)|2\ngpu|gpu:a100:4(S:0-1)|64\n", "gpu")  # what sinfo reports
    assert (offer.gpus, offer.cpus) == (4, 64)
    opts = SlurmOptions.from_args(args, resolve_config(args), offer)
    assert opts.device == "cuda" and opts.placement.memory_fraction == 0.5  # two runs share a GPU
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(**opts.parameters())
    executor._executor.parameters["map_count"] = 10  # render it as the job array of 10 elements it would be
    text = executor._executor._make_submission_file_text("true", "x")
    for line in (
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--time=1590",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=64GB",  # two runs per task share the job: 2 x 32 GB
        "--ntasks-per-node=2",
        "--nodes=1",
        "--array=0-9%4",
        "--signal=USR2@90",
        "--constraint=a100",
        "#SBATCH --exclusive",
        "\nmodule load cuda\n",
        "export OMP_NUM_THREADS=8",
    ):
        assert line in text, f"{line!r} not in:\n{text}"
    # srun (22.05+) does not inherit --cpus-per-task: without this each task runs on one CPU
    assert text.index("export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK") < text.index("\nsrun ")


def test_smoke_sweep_matches_local(slurm_cluster, tmp_path):
    """Same plan, same seeds: the Slurm sweep gets the local sweep's summary, number for number."""
    models = ["--models", "bilateral-specialised,ensemble-top1"]  # 6 runs in 2 stages
    started = time.time()
    local = sweep(tmp_path / "local", *models)
    local_s = time.time() - started
    assert local.returncode == 0, local.stderr
    started = time.time()
    slurm = sweep(tmp_path / "slurm", *models, *ON_SLURM)
    slurm_s = time.time() - started
    assert slurm.returncode == 0, slurm.stderr
    print(f"\nsmoke sweep of 6 runs: local {local_s:.1f}s, Slurm {slurm_s:.1f}s")

    assert "stage 1 on Slurm" in slurm.stderr and "stage 2 on Slurm" in slurm.stderr
    assert "0 queued, 0 running, 4 done, 0 failed" in slurm.stderr
    a, b = (pd.read_csv(tmp_path / side / "t" / "summary.csv") for side in ("local", "slurm"))
    assert list(a.columns) == list(b.columns) and len(a) == 5
    accuracy = [c for c in a.columns if c.startswith(("fine_acc", "coarse_acc"))] + ["model", "seeds"]
    pd.testing.assert_frame_equal(a[accuracy], b[accuracy])
    a, b = (pd.read_csv(tmp_path / side / "t" / "runs.csv") for side in ("local", "slurm"))
    assert list(a.columns) == list(b.columns)
    tests = [c for c in a.columns if c.startswith("test_")]
    pd.testing.assert_frame_equal(a[["run_id", *tests]], b[["run_id", *tests]])

    jobs = ledger(tmp_path / "slurm" / "t")
    assert len(jobs) == 6 and len({j.split("_")[0] for j in jobs.values()}) == 2  # one job array per stage
    text = status(tmp_path / "slurm" / "t")
    assert "6 finished" in text and "COMPLETED" in text and "all runs finished" in text


def test_fused_sweep_matches_local_fused(slurm_cluster, tmp_path):
    """--fuse 2: the pool of 2 trains as one network in one array element, as it does locally."""
    models = ["--models", "ensemble-top2", "--fuse", "2", "train.epochs=1"]
    local = sweep(tmp_path / "local", *models)
    assert local.returncode == 0, local.stderr
    slurm = sweep(tmp_path / "slurm", *models, *ON_SLURM)
    assert slurm.returncode == 0, slurm.stderr
    a, b = (pd.read_csv(tmp_path / side / "t" / "runs.csv") for side in ("local", "slurm"))
    tests = [c for c in a.columns if c.startswith("test_")]
    pd.testing.assert_frame_equal(a[["run_id", "fused_runs", *tests]], b[["run_id", "fused_runs", *tests]])
    assert sorted(a["fused_runs"]) == [1, 2, 2]  # the ensemble assembles; its pool trained fused
    jobs = ledger(tmp_path / "slurm" / "t")
    pool = [run_id for run_id in jobs if run_id.startswith("unilateral")]
    assert len(pool) == 2 and jobs[pool[0]] == jobs[pool[1]]  # one array element for the group


def test_requeue_resumes_from_checkpoint(slurm_cluster, tmp_path):
    """Mid-run, one job gets Slurm's USR2 (what --signal sends before the time limit, and on
    preemption: submitit checkpoints and requeues) and the other `scontrol requeue`; both resume
    from their last epoch checkpoint and the sweep completes."""
    epochs = 16
    models = ["--models", "hemisphere-fine,hemisphere-coarse"]
    driver = sweep(tmp_path, *ON_SLURM, *models, f"train.epochs={epochs}", wait=False)
    root = tmp_path / "t"
    deadline = time.time() + 180
    while time.time() < deadline:
        jobs = ledger(root)
        done = {
            r: len(list(open(root / "runs" / r / "metrics.jsonl")))
            for r in jobs
            if (root / "runs" / r / "metrics.jsonl").is_file()
        }
        if len(jobs) == 2 and len(done) == 2 and all(1 <= n < epochs - 6 for n in done.values()):
            break
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.2)
    else:
        driver.kill()
        pytest.fail(f"runs did not get going: {driver.communicate()}")
    signalled, requeued = sorted(jobs)
    subprocess.run(["scancel", "--signal", "USR2", jobs[signalled]], check=True)
    subprocess.run(["scontrol", "requeue", jobs[requeued]], check=True)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err

    for run_id in (signalled, requeued):
        record = json.loads((root / "runs" / run_id / "record.json").read_text())
        assert record["resumed_from_epoch"] and record["resumed_from_epoch"] >= 1, (run_id, record)
        metrics = (root / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(m)["epoch"] for m in metrics] == list(range(epochs))
        log = "".join(p.read_text() for p in (root / "slurm" / jobs[run_id]).glob("*_log.*"))
        assert "(restart 1)" in log, log[-3000:]
    log = "".join(p.read_text() for p in (root / "slurm" / jobs[signalled]).glob("*_log.*"))
    assert "Calling checkpoint method" in log and f"Requeued job {jobs[signalled]}" in log


def test_failing_run_is_reported_and_rerun_trains_only_it(slurm_cluster, tmp_path):
    fine, coarse = plan_ids("--models", "hemisphere-fine,hemisphere-coarse")
    root = tmp_path / "t"
    (root / "runs" / coarse / "metrics.jsonl").mkdir(parents=True)  # the run cannot write its log
    proc = sweep(tmp_path, *ON_SLURM, "--models", "hemisphere-fine,hemisphere-coarse")
    assert proc.returncode == 1, proc.stderr
    assert f"run {coarse} failed" in proc.stderr and "Traceback" in proc.stderr
    assert "IsADirectoryError" in proc.stderr and "rerun the same command" in proc.stderr
    error = (root / "runs" / coarse / "error.txt").read_text()
    assert "Traceback" in error and "IsADirectoryError" in error
    assert (root / "runs" / fine / "record.json").is_file()
    assert "1 finished, 1 failed" in status(root)
    first = ledger(root)
    finished = (root / "runs" / fine / "record.json").stat().st_mtime_ns

    (root / "runs" / coarse / "metrics.jsonl").rmdir()  # the fix
    proc = sweep(tmp_path, *ON_SLURM, "--models", "hemisphere-fine,hemisphere-coarse")
    assert proc.returncode == 0, proc.stderr
    assert "submitted 1 run(s)" in proc.stderr
    second = ledger(root)
    assert second[fine] == first[fine] and second[coarse] != first[coarse]  # only the failed run went again
    assert (root / "runs" / fine / "record.json").stat().st_mtime_ns == finished
    assert not (root / "runs" / coarse / "error.txt").exists()


def test_detach_then_status_then_attach(slurm_cluster, tmp_path):
    """--detach submits both stages at once (afterok); --status follows; the blocking command run
    afterwards waits for the same jobs instead of submitting the runs again."""
    args = [*ON_SLURM, "--models", "bilateral-specialised", "--runs-per-task", "2"]  # 2 hemispheres, then 1
    proc = sweep(tmp_path, *args, "--detach")
    assert proc.returncode == 0, proc.stderr
    assert "submitted 3 run(s)" in proc.stdout and "--status" in proc.stdout
    root = tmp_path / "t"
    jobs = ledger(root)
    hemispheres = {j for r, j in jobs.items() if r.startswith("hemisphere")}
    assert len(jobs) == 3 and len(hemispheres) == 1  # both hemispheres in one element, as 2 tasks
    (bilateral,) = (j for r, j in jobs.items() if r.startswith("bilateral"))
    script = next((root / "slurm" / bilateral).glob("*_submission.sh")).read_text()
    assert f"--dependency=afterok:{hemispheres.pop()}" in script and "--kill-on-invalid-dep=yes" in script
    text = status(root)
    assert all(job in text for job in jobs.values()), text  # --status follows the detached jobs
    # tiny runs can all finish before --status looks (seen once in a fresh-clone suite run): then the
    # blocking command has nothing left to wait for, and must still submit nothing again
    finished_before = "3 finished" in text

    proc = sweep(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "as job array" not in proc.stderr
    assert finished_before or "already in Slurm jobs" in proc.stderr, proc.stderr
    assert ledger(root) == jobs
    assert "3 finished" in status(root)
    aggregate = subprocess.run(
        [sys.executable, str(REPO / "launch" / "aggregate.py"), str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert aggregate.returncode == 0, aggregate.stderr
    assert len(pd.read_csv(root / "summary.csv")) == 3


def test_ddp_over_two_tasks_on_cpu(slurm_cluster, tmp_path):
    """--workers-per-run 2 with --device cpu: one job of 2 tasks forms a gloo process group; run()
    trains across it and rank 0 writes."""
    ddp = ["--workers-per-run", "2", "--cpus-per-run", "2"]
    proc = sweep(tmp_path, *ON_SLURM, "--models", "unilateral", *ddp)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "t"
    ((run_id, job),) = ledger(root).items()
    record = json.loads((root / "runs" / run_id / "record.json").read_text())
    assert record["workers"] == 2
    logs = [p.read_text() for p in sorted((root / "slurm" / job).glob("*_log.err"))]
    assert len(logs) == 2
    for rank, log in enumerate(logs):
        assert f"process group: rank {rank}/2" in log and "backend gloo" in log


def test_a_rank_1_failure_ends_its_ddp_job_and_the_other_run_finishes(slurm_cluster, tmp_path):
    """Rank 1 of one DDP run raises (tests/faults/sitecustomize.py); rank 0, waiting in a collective,
    must end within seconds (gloo would wait 30 minutes), the error must be the run's, and the
    sweep's other run must finish."""
    faults = REPO / "tests" / "faults"
    env = {**ENV, "PYTHONPATH": str(faults), "FAIL_ON_RANK1": "hemisphere-fine"}
    models = ["--models", "hemisphere-fine,hemisphere-coarse"]
    ddp = ["--workers-per-run", "2", "--cpus-per-run", "2"]
    cmd = sweep_cmd(tmp_path, "--seeds", "0", *ON_SLURM, *models, *ddp)
    tic = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert time.time() - tic < 300
    runs = tmp_path / "t" / "runs"
    (failed,) = [d for d in runs.iterdir() if d.name.startswith("hemisphere-fine")]
    (other,) = [d for d in runs.iterdir() if d.name.startswith("hemisphere-coarse")]
    error = (failed / "error.txt").read_text()
    assert "rank 1 of 2 failed" in error and "injected failure on rank 1" in error, error
    assert (other / "record.json").is_file() and not (failed / "record.json").exists()
    job = ledger(tmp_path / "t")[failed.name]
    logs = "".join(p.read_text() for p in (tmp_path / "t" / "slurm" / job).glob("*_log.err"))
    assert "rank 0/2: ending, another rank failed" in logs


def test_ray_on_slurm_asks_for_every_gpu_of_a_node_by_default(tmp_path):
    from launch.sweep import parse_args, resolve_config
    from slurm.backend import SlurmOptions, parse_sinfo

    offer = parse_sinfo("cpu*|(null)|2\ngpu|gpu:a100:8(S:0-1)|64\n", "gpu")
    for more, gpus in (([], 8), (["--gpus-per-node", "2"], 2)):
        argv = ["--cluster", "slurm", "--engine", "ray", "--partition", "gpu", "--out", str(tmp_path), *more]
        args = parse_args(argv)
        opts = SlurmOptions.from_args(args, resolve_config(args), offer)
        assert opts.gpus_per_job == gpus and opts.parameters()["gpus_per_node"] == gpus


def test_sinfo_gpus_are_read_per_partition():
    from slurm.backend import parse_sinfo

    text = "debug*|(null)|8\ngpu|gpu:a100:4(S:0-1),mps:400|64\ngpu|gpu:2|32\nbig|gpu:h100:8|96\n"
    assert (parse_sinfo(text, None).gpus, parse_sinfo(text, None).cpus) == (0, 8)
    assert parse_sinfo(text, "gpu").gpus == 4 and parse_sinfo(text, "big").gpus == 8
    with pytest.raises(ConfigError, match="no partition 'nope'"):
        parse_sinfo(text, "nope")


def test_default_device_on_a_cpu_only_partition_is_refused_before_submitting(slurm_cluster, tmp_path):
    """The front door with no device flag on a partition sinfo shows without GPUs (this cluster's):
    a whole sweep on CPUs is never a quiet default; the error names --device cpu and --partition, and
    nothing is submitted. With --device cpu the same sweep trains on the CPU."""
    args = ["--cluster", "slurm", "--cpus-per-run", "1", "--time", "15", "--models", "hemisphere-fine"]
    proc = sweep(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        "--device auto would train every run on the CPU, but Slurm's default partition (sinfo)" in proc.stderr
    )
    assert "pass --device cpu" in proc.stderr and "--partition" in proc.stderr
    assert not (tmp_path / "t" / "slurm").exists() and not list(tmp_path.rglob("record.json"))
    proc = sweep(tmp_path, *args, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "t" / "runs").glob("*/record.json")]
    assert records and all(r["device"] == "cpu" and r["placement"]["device"] == "cpu" for r in records)
    assert all(r["placement"]["gpus"] == 0 and r["threads"] == 1 for r in records)


def test_task_refuses_a_spec_whose_id_changed_since_submission(tmp_path, tiny_plan):
    """Code edited between sbatch and the job's start can change a RunSpec's hash: the task must not
    train it into a directory the driver does not know."""
    from slurm.task import RunsFailed, RunTask

    spec = tiny_plan("plan.models=[unilateral]").runs[0]
    task = RunTask(str(tmp_path), "cpu", str(REPO / "data"))
    with pytest.raises(RunsFailed, match="CodeChanged"):
        task._run_all([[(spec, "unilateral-resnet9-s0-00000000")]], "cpu", writer=True)  # one group
    assert (
        "changed what a RunSpec holds"
        in (tmp_path / "runs" / "unilateral-resnet9-s0-00000000" / "error.txt").read_text()
    )
    assert not (tmp_path / "runs" / spec.run_id).exists()


def test_ray_engine_inside_a_slurm_allocation(slurm_cluster, tmp_path):
    """--engine ray: one Slurm job starts a Ray head and a Ray worker in its allocation with token auth
    (a client without the job's token is refused), runs the Ray backend there, and leaves no Ray
    process behind. This machine is one Slurm node, so two tasks on it
    stand in for two nodes (`--sbatch ntasks-per-node=2`; on a real cluster: --nodes 2)."""
    args = [
        "--cluster",
        "slurm",
        "--engine",
        "ray",
        "--device",
        "cpu",
        "--time",
        "15",
        "--cpus-per-node",
        "1",
    ]
    args += ["--sbatch", "ntasks-per-node=2", "--cpus-per-run", "1", "--models", "bilateral-specialised"]
    running = sweep(tmp_path, *args, wait=False)
    root = tmp_path / "t"
    head = _wait_for_file(root / "slurm", "ray-head.json", running)
    _check_token_auth(head, tmp_path / "no-token-home")
    stdout, stderr = running.communicate(timeout=400)
    proc = subprocess.CompletedProcess(running.args, running.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr
    assert not (head.parent / "ray-token").exists()  # gone with the job
    jobs = ledger(root)
    assert len(jobs) == 3 and len(set(jobs.values())) == 1  # the whole sweep in one allocation
    job = next(iter(jobs.values()))
    assert len(list((root / "runs").glob("*/record.json"))) == 3
    assert "Ray on Slurm (1 job(s)): 0 queued, 0 running, 1 done, 0 failed; runs finished 3/3" in proc.stderr
    log = "".join(p.read_text() for p in (root / "slurm" / job).glob("*_log.*"))
    assert "--head" in log and "--address=" in log and "Ray cluster up: 2 node(s)" in log
    kept = root / "slurm" / job / "ray-logs"  # out of the node-local temp dirs, which are gone
    assert {p.name.split("-")[0] for p in kept.iterdir()} == {"task0", "task1"}
    assert list(kept.glob("task0-*/raylet.out")) and not list(Path("/tmp").glob(f"bilateral-ray-{job}-*"))
    leftovers = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and f"/tmp/bilateral-ray-{job}-".encode() in _cmdline(p)
    ]
    assert not leftovers, leftovers


def _wait_for_file(folder: Path, name: str, proc: subprocess.Popen, timeout_s: float = 300) -> Path:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = list(folder.glob(f"*/{name}"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no {name} under {folder} after {timeout_s:.0f}s")


def _check_token_auth(head: Path, scratch: Path) -> None:
    """The allocation's Ray cluster refuses a client without the job's token (Ray's gRPC answers
    InvalidAuthToken, which its client logs while it retries) and takes one holding it (0600)."""
    import stat

    address, token = json.loads(head.read_text())["address"], head.parent / "ray-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    client = f"import ray; ray.init(address={address!r}); print('joined', ray.cluster_resources())"
    base = {k: v for k, v in ENV.items() if not k.startswith("RAY_AUTH")}
    scratch.mkdir()
    without = {**base, "HOME": str(scratch), "RAY_AUTH_MODE": "disabled"}  # no ~/.ray/auth_token either
    log = scratch / "refused.log"
    with open(log, "w") as out:
        refused = subprocess.Popen([sys.executable, "-c", client], env=without, stdout=out, stderr=out)
    deadline = time.time() + 60
    while "InvalidAuthToken" not in log.read_text() and refused.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    refused.kill()
    refused.wait()
    assert "InvalidAuthToken" in log.read_text() and "joined" not in log.read_text(), log.read_text()[-2000:]
    with_token = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    joined = subprocess.run(
        [sys.executable, "-c", client], env=with_token, capture_output=True, text=True, timeout=120
    )
    assert joined.returncode == 0 and "joined" in joined.stdout, joined.stderr[-2000:]


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_the_callosal_comparison_runs_on_slurm(slurm_cluster, tmp_path):
    rows = ",".join(r.name for r in load_comparison("callosal").rows if r.base == "callosal")
    data = ["--data", f"cifar10-hier4:{CIFAR10_JPG}", "train.epochs=1"]
    proc = sweep(tmp_path, *ON_SLURM, "--experiment", "callosal", "--models", rows, *data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert set(rows.split(",")) <= set(summary.index) and len(rows.split(",")) == 6
    assert len(ledger(tmp_path / "t")) == 8  # six callosal runs and the two hemispheres four of them need
