"""Two sweeps on one directory: each claims a run before training it, so the second trains what the
first is not training, waits for the rest, and takes over a run whose owner crashed."""

import os
import signal
import subprocess
import sys
import time

from bilateral.claims import Claims
from bilateral.plan import build_plan
from bilateral.store import SweepStore
from bilateral.sweep import run_claimed
from tests.conftest import REPO, sweep_cmd, tiny_config

SMALL = [
    "data.val_size=100",
    "data.train_subset=200",
    "data.test_subset=100",
    "model.width=0.0625",
    "train.epochs=1",
    "train.batch_size=32",
    "train.eval_batch_size=100",
]
HOLD = """
import sys, time, types
from bilateral.claims import Claims
from bilateral.sweep import run_claimed
from bilateral.store import SweepStore
claims = Claims(SweepStore(sys.argv[1]))
assert claims.take([types.SimpleNamespace(run_id=sys.argv[2])])
print("held", flush=True)
time.sleep(600)
"""


def unilateral_runs(seeds: str = "0,1"):
    plan = build_plan(tiny_config("plan.models=[unilateral]", f"plan.seeds=[{seeds}]", *SMALL))
    return sorted(plan.runs, key=lambda s: s.seed)


def test_a_claim_is_exclusive_and_a_finished_run_is_not_claimed(tmp_path):
    specs = unilateral_runs()
    store = SweepStore(tmp_path)
    mine, other = Claims(store), Claims(store)
    assert mine.take(specs[:1]) == specs[:1]
    assert other.take(specs) == specs[1:]  # the first is held
    assert f"pid {os.getpid()} on " in other.holders(specs[:1])
    mine.release(specs[:1])
    store.run(specs[0].run_id).write_record({"run_id": specs[0].run_id})
    assert Claims(store).take(specs[:1]) == []  # released, but finished meanwhile


def test_a_sweep_claims_a_group_at_a_time_and_the_rest_of_one_another_holds_part_of(tmp_path):
    """The local executor trains fused groups: a sweep claims one group at a time (a second sweep
    takes the next), and of a group another sweep holds in part, the members it does not hold."""
    a, b, c = unilateral_runs("0,1,2")
    store, other = SweepStore(tmp_path), Claims(SweepStore(tmp_path))
    assert other.take([a]) == [a]
    calls = []

    class Recorder:
        def groups(self, specs):
            return [g for g in ([s for s in specs if s.seed < 2], [s for s in specs if s.seed == 2]) if g]

        def __call__(self, specs):
            calls.append([s.seed for s in specs])
            for spec in specs:
                store.run(spec.run_id).write_record({"run_id": spec.run_id})
            if len(calls) == 2:
                other.release([a])  # the other sweep stops: this one takes its run over
            return {}

    assert run_claimed([a, b, c], store, Claims(store), Recorder()) == {}
    assert calls == [[1], [2], [0]]


def until(condition, timeout: float, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_second_sweep_trains_what_the_first_is_not_and_takes_over_a_crashed_owners_run(tmp_path):
    first, second = unilateral_runs()
    store = SweepStore(tmp_path / "t")
    # another sweep's driver, training `first`: a real process holding a real claim
    owner = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store.root), first.run_id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    log, sweep = tmp_path / "sweep.log", None
    try:
        assert owner.stdout.readline() == "held\n"
        with open(log, "w") as err:
            sweep = subprocess.Popen(
                sweep_cmd(tmp_path, "--models", "unilateral", "--seeds", "0,1", *SMALL),
                stderr=err,
                stdout=subprocess.DEVNULL,
                cwd=REPO,
            )
        until(lambda: store.run(second.run_id).is_finished(), 180, sweep, log)
        until(lambda: "waiting for 1 run(s)" in log.read_text(), 30, sweep, log)
        assert f"another sweep on this directory is training (pid {owner.pid} on " in log.read_text()
        assert not store.run(first.run_id).path("checkpoints").exists()  # left to its owner

        owner.send_signal(signal.SIGKILL)  # the owner crashes: the kernel drops its claim
        assert sweep.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        for proc in (owner, sweep):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert store.run(first.run_id).is_finished() and store.run(second.run_id).is_finished()
    assert "Traceback" not in log.read_text()
