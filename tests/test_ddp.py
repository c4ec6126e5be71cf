"""DDP over 2 gloo processes on this CPU, through bilateral.training.run as Slurm and Ray call it: a
failure on one rank ends both, ranks draw their own dropout masks and draw them again after a
resume, and a rank that would read a stale last.pt still resumes from rank 0's epoch."""

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from bilateral import distributed
from bilateral.distributed import PEER_FAILED_EXIT
from bilateral.plan import build_plan
from bilateral.store import RunStore, SweepStore
from bilateral.training import run
from tests.conftest import tiny_config

OVERRIDES = ["plan.models=[unilateral]", "model.dropout=0.5", "train.epochs=3"]


def spec():
    return build_plan(tiny_config(*OVERRIDES)).runs[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, root: str, scenario: str, out: str) -> None:
    """One rank: record each training step's dropout masks (a hash per call), then run()."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    masks: list[str] = []
    dropout = F.dropout

    def recording(x, p=0.5, training=True, inplace=False):
        y = dropout(x, p, training, inplace)
        if training and p > 0:
            masks.append(hashlib.sha256((y == 0).numpy().tobytes()).hexdigest()[:16])
        return y

    F.dropout = recording
    if scenario in ("sigkill", "frozen"):  # a short silence: the test need not wait the default 30 s
        distributed.PEER_SILENCE_S = 8.0
    if scenario == "echo":  # rank 0's watcher looks too late: rank 0 raises first, as gloo makes it
        distributed.POLL_S = 60.0
    if scenario == "killed" and rank == 0:  # keep the epoch-0 last.pt: the stale file of the resume
        save = RunStore.save_checkpoint

        def save_and_keep(self, name, state):
            save(self, name, state)
            if name == "last" and state["epoch"] == 0:
                shutil.copy(self.path("checkpoints/last.pt"), self.path("checkpoints/stale.pt"))

        RunStore.save_checkpoint = save_and_keep
    if scenario == "lagging" and rank == 1:  # its cached view of shared storage shows a record already
        RunStore.is_finished = lambda self: True
        RunStore.read_record = lambda self: {"run_id": spec().run_id, "cached": True}
    if scenario == "stale" and rank == 1:  # this rank's view of shared storage lags one epoch behind
        load = RunStore.load_checkpoint
        RunStore.load_checkpoint = lambda self, name, mmap=False: load(
            self, "stale" if name == "last" else name, mmap
        )

    def on_epoch(row: dict) -> None:
        masks.append(f"end of epoch {row['epoch']}")
        if scenario in ("fail", "echo") and rank == 1:
            raise RuntimeError("injected failure on rank 1")
        if scenario == "echo" and rank == 0:  # the collective rank 1's exit broke
            time.sleep(2)
            raise RuntimeError("Connection closed by peer (an echo of rank 1's failure)")
        if scenario == "sigkill" and rank == 1:  # dies without a word, as under the OOM killer
            os.kill(os.getpid(), signal.SIGKILL)
        if scenario == "frozen" and rank == 1:  # hangs with its sockets open, as on a hung node
            os.kill(os.getpid(), signal.SIGSTOP)
        if scenario == "killed" and row["epoch"] == 2:  # both ranks die before epoch 2's checkpoint
            os._exit(9)

    record = run(spec(), SweepStore(root), device="cpu", data_dir=tiny_config().data_dir, on_epoch=on_epoch)
    with open(out, "w") as f:
        json.dump({"masks": masks, "resumed_from_epoch": record["resumed_from_epoch"]}, f)
    dist.destroy_process_group()


def launch(tmp_path, root, scenario: str, timeout: float = 120, hung: tuple[int, ...] = ()) -> list[int]:
    """Both ranks; their exit codes. The timeout is far below gloo's (30 min): a hang fails here,
    except of the ranks in `hung`, which are expected to hang and are killed once the others end."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    outs = [str(tmp_path / f"{scenario}-{r}.json") for r in range(2)]
    procs = [ctx.Process(target=worker, args=(r, port, str(root), scenario, outs[r])) for r in range(2)]
    for p in procs:
        p.start()
    deadline = time.time() + timeout
    for rank, p in enumerate(procs):
        if rank not in hung:
            p.join(max(1, deadline - time.time()))
    alive = [rank for rank, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert set(alive) == set(hung), f"{scenario}: ranks {alive} still running after {timeout} s"
    return [p.exitcode for p in procs]


def masks(tmp_path, scenario: str, rank: int) -> dict[int, list[str]]:
    """{epoch: that epoch's mask hashes} of one rank."""
    per_epoch, current = {}, []
    for item in json.loads((tmp_path / f"{scenario}-{rank}.json").read_text())["masks"]:
        if item.startswith("end of epoch"):
            per_epoch[int(item.split()[-1])], current = current, []
        else:
            current.append(item)
    return per_epoch


def test_a_failure_on_rank_1_ends_both_ranks_and_is_recorded(tmp_path):
    tic = time.time()
    codes = launch(tmp_path, tmp_path / "sweep", "fail")
    assert codes[0] == PEER_FAILED_EXIT and codes[1] not in (0, PEER_FAILED_EXIT), codes
    assert time.time() - tic < 90
    error = (tmp_path / "sweep" / "runs" / spec().run_id / "error.txt").read_text()
    assert "rank 1 of 2 failed" in error and "injected failure on rank 1" in error
    assert not (tmp_path / "sweep" / "runs" / spec().run_id / "record.json").exists()


def test_an_echo_on_rank_0_of_rank_1s_failure_leaves_rank_1s_error_as_the_runs(tmp_path):
    """Rank 1 fails; rank 0 raises too before its watcher sees the failure (gloo: connection closed
    by peer). Rank 0 must end as a peer of a failure, not as a failure of its own that its caller
    (Slurm's run_logged) would record over rank 1's error."""
    codes = launch(tmp_path, tmp_path / "sweep", "echo")
    assert codes[0] == PEER_FAILED_EXIT and codes[1] not in (0, PEER_FAILED_EXIT), codes
    error = (tmp_path / "sweep" / "runs" / spec().run_id / "error.txt").read_text()
    assert error.startswith("rank 1 of 2 failed") and "injected failure on rank 1" in error, error
    assert "echo" not in error


def test_a_killed_rank_1_ends_rank_0_and_is_recorded(tmp_path):
    """SIGKILL leaves rank 1 no chance to publish an error. gloo sees its sockets close and rank 0
    fails at its next collective; NCCL may not, so rank 0 also watches rank 1's heartbeat."""
    tic = time.time()
    codes = launch(tmp_path, tmp_path / "sweep", "sigkill")
    assert codes[1] == -signal.SIGKILL and codes[0] in (1, PEER_FAILED_EXIT), codes
    assert time.time() - tic < 90
    error = (tmp_path / "sweep" / "runs" / spec().run_id / "error.txt").read_text()
    assert error.startswith(("rank 1 of 2 stopped: no heartbeat", "rank 0 of 2 failed: ")), error
    assert "stopped: no heartbeat" in error or "by peer" in error, error  # closed or reset


def test_a_hung_rank_1_ends_rank_0_after_its_heartbeat_stops(tmp_path):
    """A rank frozen with its sockets open (SIGSTOP: a hung node or filesystem) fails no collective:
    only its silence tells. Rank 0 ends PEER_SILENCE_S (8 s here) after its last heartbeat."""
    tic = time.time()
    codes = launch(tmp_path, tmp_path / "sweep", "frozen", hung=(1,))
    assert codes == [PEER_FAILED_EXIT, -signal.SIGKILL], codes
    assert time.time() - tic < 90
    error = (tmp_path / "sweep" / "runs" / spec().run_id / "error.txt").read_text()
    assert error.startswith("rank 1 of 2 stopped: no heartbeat for 8 s"), error


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 2-rank run, and one killed before epoch 2's checkpoint then resumed with
    rank 1 seeing the epoch-0 last.pt."""
    tmp = tmp_path_factory.mktemp("ddp")
    assert launch(tmp, tmp / "full", "full") == [0, 0]
    assert launch(tmp, tmp / "resumed", "killed") == [9, 9]
    assert launch(tmp, tmp / "resumed", "stale") == [0, 0]
    return tmp


def test_ranks_draw_their_own_dropout_masks(runs):
    rank0, rank1 = masks(runs, "full", 0), masks(runs, "full", 1)
    assert set(rank0) == {0, 1, 2} and len(rank0[0]) == len(rank1[0]) > 0
    for epoch in rank0:
        assert not set(rank0[epoch]) & set(rank1[epoch])


def test_a_resume_draws_the_same_masks_from_rank_0s_checkpoint(runs):
    for rank in (0, 1):
        resumed = json.loads((runs / f"stale-{rank}.json").read_text())
        assert resumed["resumed_from_epoch"] == 2  # not 1: rank 1's stale file was never read
        assert masks(runs, "stale", rank) == {2: masks(runs, "full", rank)[2]}
    run_id = spec().run_id
    full = SweepStore(runs / "full").run(run_id).load_checkpoint("last")["model"]
    resumed = SweepStore(runs / "resumed").run(run_id).load_checkpoint("last")["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def finishing_worker(rank: int, port: int, errors: str) -> None:
    """One rank of a run whose ranks finish apart: rank 1 is still busy (say, evaluating the test
    split on a slower GPU) after rank 0 has written the record; rank 0 then tears its process group
    down and exits as slurm/task.py does, taking the store (which lives in rank 0) with it."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def record(text: str) -> None:
        with open(errors, "a") as f:
            f.write(f"rank {rank} recorded: {text}\n")

    with distributed.fail_together("slow-finish", record):
        if rank == 1:
            time.sleep(3)
    dist.destroy_process_group()


def test_rank_0_alone_decides_whether_a_run_is_finished(tmp_path):
    """Rank 1 sees a record.json that rank 0 does not (NFS attribute caching): today's rank 1 would
    skip the run that rank 0 enters and leave it waiting in a collective. Rank 0 decides for both."""
    assert launch(tmp_path, tmp_path / "sweep", "lagging") == [0, 0]
    record = json.loads((tmp_path / "sweep" / "runs" / spec().run_id / "record.json").read_text())
    assert record["workers"] == 2 and "cached" not in record
    assert masks(tmp_path, "lagging", 1)  # rank 1 trained: it recorded each epoch's dropout masks


def test_ranks_that_finish_apart_both_succeed(tmp_path):
    """No rank may leave fail_together while a peer is still in it: rank 0's exit would take the store
    away and the peer would report a finished run as failed (exit 75, error.txt, afterok dependents
    cancelled)."""
    ctx = multiprocessing.get_context("spawn")
    port, errors = free_port(), tmp_path / "errors.txt"
    procs = [ctx.Process(target=finishing_worker, args=(r, port, str(errors))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    codes = [p.exitcode for p in procs]
    assert codes == [0, 0], codes
    assert not errors.exists(), errors.read_text()
