"""SIGTERM (kill, Slurm's time limit, preemption) and Ctrl-C in the middle of an epoch: the sweep ends
within seconds, keeps every finished run and the last checkpoint of the unfinished one, says where it
stands without a traceback, and a rerun resumes. Only processes this test started are signalled."""

import signal
import subprocess
import time

from bilateral.store import SweepStore
from tests.conftest import REPO, sweep_cmd

# epochs of a few seconds on a loaded 2-core machine: a signal sent as an epoch starts lands inside it
ARGS = [
    "--models",
    "unilateral",
    "--seeds",
    "0,1",
    "data.val_size=100",
    "data.train_subset=400",
    "data.test_subset=100",
    "model.width=0.0625",
    "train.epochs=3",
    "train.batch_size=32",
    "train.eval_batch_size=100",
]


def signal_when(out, ready, signum: int, *more: str) -> tuple[subprocess.Popen, str, float]:
    """Start the sweep, send it signum once ready() holds, and return (the process, its stderr, seconds
    from the signal to its exit)."""
    log = out / f"sweep-{time.monotonic_ns()}.log"  # a file, not a pipe that a chatty child could fill
    with open(log, "w") as err:
        proc = subprocess.Popen(sweep_cmd(out, *ARGS, *more), stderr=err, stdout=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signum)
        sent = time.monotonic()
        proc.wait(timeout=60)
        return proc, log.read_text(), time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()


def run_of_seed(store: SweepStore, seed: int):
    runs = store.root / "runs"
    found = [p.name for p in runs.iterdir() if f"-s{seed}-" in p.name] if runs.is_dir() else []
    return store.run(found[0]) if found else None


def checkpointed(store: SweepStore, seed: int, epoch: int):
    """ready() once the run of that seed has written its `last` checkpoint after that epoch: the
    next epoch is starting."""

    def ready() -> bool:
        run = run_of_seed(store, seed)
        return run is not None and run.has_checkpoint("last") and run.checkpoint_epoch("last") >= epoch

    return ready


def test_sigterm_and_ctrl_c_mid_epoch_keep_everything_and_a_rerun_resumes(tmp_path):
    store = SweepStore(tmp_path / "t")
    proc, stderr, took = signal_when(tmp_path, checkpointed(store, 1, 0), signal.SIGTERM)
    first, second = run_of_seed(store, 0), run_of_seed(store, 1)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert took < 10, f"{took:.1f} s from SIGTERM to exit"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert f"{second.run_id} epoch 2/3" not in stderr  # it was stopped inside its second epoch
    assert "stopped by SIGTERM: 1 of 2 runs finished and kept" in stderr, stderr[-2000:]
    assert f"{second.run_id}: resumes after epoch 1, from its checkpoints/last.pt" in stderr
    assert "Rerun the same command to resume" in stderr
    kept = first.path("record.json").read_bytes()
    assert second.checkpoint_epoch("last") == 0 and not second.is_finished()
    assert len(second.read_metrics()) == 1

    proc, stderr, took = signal_when(tmp_path, checkpointed(store, 1, 1), signal.SIGINT)  # Ctrl-C
    assert proc.returncode == 128 + signal.SIGINT and took < 10, stderr[-3000:]
    assert "resuming after epoch 1" in stderr and f"{second.run_id} epoch 3/3" not in stderr
    assert "Traceback" not in stderr and "stopped by SIGINT: 1 of 2 runs finished" in stderr, stderr[-3000:]
    assert f"{second.run_id}: resumes after epoch 2" in stderr
    assert second.checkpoint_epoch("last") == 1

    done = subprocess.run(sweep_cmd(tmp_path, *ARGS), capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after epoch 2" in done.stderr
    assert first.path("record.json").read_bytes() == kept  # not retrained
    record = second.read_record()
    assert record["resumed_from_epoch"] == 2 and [m["epoch"] for m in second.read_metrics()] == [0, 1, 2]


def test_sigterm_to_a_ray_driver_mid_epoch(tmp_path):
    """Ray's own handlers would abort the driver with a core dump (SIGTERM) or stop Tune gracefully
    and report the runs as failed (Ctrl-C): the driver keeps the sweep's."""
    store = SweepStore(tmp_path / "t")
    ray = ["--seeds", "0", "--cluster", "ray", "--num-cpus", "1", "--device", "cpu"]
    proc, stderr, took = signal_when(tmp_path, checkpointed(store, 0, 0), signal.SIGTERM, *ray)
    assert proc.returncode == 128 + signal.SIGTERM and took < 30, stderr[-3000:]
    assert "Traceback" not in stderr and "stopped by SIGTERM: 0 of 1 runs finished" in stderr, stderr[-3000:]
    run = run_of_seed(store, 0)
    assert f"{run.run_id}: resumes after epoch 1" in stderr and run.checkpoint_epoch("last") == 0
