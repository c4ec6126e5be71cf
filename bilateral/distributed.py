"""DDP ranks that fail together and resume together.

A rank that raises publishes its error in the process group's store and records it (the first
failure only); every other rank watches that store from a thread and, once it sees the failure,
ends its process within a second, because it is waiting in a collective that can never complete
(NCCL or gloo would otherwise hold it until their timeout, ten minutes or more). A rank that dies
without raising (SIGKILL, the out-of-memory killer, a lost node) cannot publish anything, so the
watchers also beat a counter in the store: a peer whose counter stands still for PEER_SILENCE_S
seconds is taken for dead, recorded, and the others end. On Slurm and Ray a DDP run is a job or
worker group of its own, so ending the processes ends exactly that run.

No rank leaves a finished run before every rank has finished it and stopped watching: rank 0 hosts
the store, so its early exit would look like a failure to a slower peer.

Resuming, only rank 0 reads checkpoints and broadcasts them: a rank that sees an older file on
shared storage cannot start from another epoch than the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from bilateral.errors import BilateralError, describe_failure

log = logging.getLogger(__name__)
PEER_FAILED_EXIT = 75  # exit status of a rank ended because another rank failed
PEER_SILENCE_S = 30.0  # a peer's heartbeat still for this long: the peer is dead
BEAT_S = 2.0  # heartbeat period: world - 1 store reads per rank each time, so not every poll
POLL_S = 0.5  # how often each rank's watcher looks for a peer's failure
ECHO_WAIT_S = 5.0  # how long an echoing rank waits for the first failure's text, to print it
LEAVE_WAIT_S = 60.0  # how long rank 0 waits, after all ranks finished, for their watchers to stop


class RankFailed(BilateralError):
    """A run under DDP failed on one of its ranks; the message names the rank and holds its error."""


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank0(make: Callable[[], Any]) -> Any:
    """make() on rank 0, its value on every rank (pickled through the process group)."""
    rank, world = rank_and_world()
    if world == 1:
        return make()
    box = [make() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def fail_together(name: str, record: Callable[[str], None], poll_s: float | None = None) -> Iterator[None]:
    """Run the body on every rank of the group; a failure on any rank ends it on all of them.

    record(text) keeps the first failing rank's error (the run's error.txt); the failing rank
    raises RankFailed, the others exit with PEER_FAILED_EXIT. A rank that raises after a peer's
    failure was published is an echo of it (gloo's "connection closed by peer" when the failed
    rank's process ends before this rank's watcher looked) and exits the same way, so that neither
    its error nor its caller's handler takes the place of the cause."""
    poll_s = POLL_S if poll_s is None else poll_s
    rank, world = rank_and_world()
    if world == 1:
        yield
        return
    store = dist.distributed_c10d._get_default_store()
    key, first = f"bilateral/{name}/failed", f"bilateral/{name}/failures"
    beat, finished = f"bilateral/{name}/beat/", f"bilateral/{name}/finished/"
    done = threading.Event()
    peers = [r for r in range(world) if r != rank]
    heard = {r: (-1, time.monotonic()) for r in peers}  # peer -> (last counter seen, when it moved)

    def silent_peer() -> str:
        """The first peer whose heartbeat stood still for PEER_SILENCE_S and that did not finish."""
        now = time.monotonic()
        for peer in peers:
            count = store.add(f"{beat}{peer}", 0)
            if count != heard[peer][0]:
                heard[peer] = (count, now)
            elif now - heard[peer][1] > PEER_SILENCE_S and not store.check([f"{finished}{peer}"]):
                return (
                    f"rank {peer} of {world} stopped: no heartbeat for {PEER_SILENCE_S:.0f} s "
                    "(killed, out of memory, or its node was lost; its own log may say more)"
                )
        return ""

    def watch() -> None:
        next_beat = 0.0
        while not done.wait(poll_s):
            try:
                failed = store.check([key])
                text = store.get(key).decode() if failed else ""
                if not failed and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + BEAT_S
                    store.add(f"{beat}{rank}", 1)
                    text = silent_peer()
                if text and not failed and store.add(first, 1) == 1:
                    record(text)  # the dead peer could not keep its own error
                    store.set(key, text)
            except Exception:  # the store lives on rank 0's host: gone with it
                text = "the process group's store is gone (rank 0 ended)"
            if text and not done.is_set():
                print(f"rank {rank}/{world}: ending, another rank failed: {text}", file=sys.stderr)
                sys.stderr.flush()
                os._exit(PEER_FAILED_EXIT)

    watcher = threading.Thread(target=watch, name="bilateral-fail-together", daemon=True)
    watcher.start()
    try:
        yield
        store.set(f"{finished}{rank}", "1")  # its heartbeat stops now: not a failure
        # Nobody leaves while a peer is still inside: rank 0's exit takes the store with it, and the
        # peer would take that for a failure of a finished run. The watcher still looks for deaths.
        store.wait([f"{finished}{r}" for r in range(world)])
    except Exception as exc:
        done.set()  # this rank's own watcher must not end it once its failure is published
        text = f"rank {rank} of {world} failed: {describe_failure(exc)}"
        try:
            cause = store.add(first, 1) == 1  # the first failure is the cause; later ones are echoes
        except Exception:  # the store is gone: the peers end on their own
            record(text)
            raise RankFailed(text) from exc
        if not cause:
            _end_as_echo(store, key, rank, world, text)
        record(text)
        store.set(key, text[-8000:])
        raise RankFailed(text) from exc
    finally:
        done.set()
        watcher.join()
    _leave(store, f"bilateral/{name}/left/", rank, world)


def _leave(store, left: str, rank: int, world: int) -> None:
    """Rank 0, which hosts the store, waits until every peer's watcher has stopped using it; the
    others say so. A failure here comes after the run finished on every rank, so it is only logged."""
    try:
        if rank == 0:
            store.wait([f"{left}{r}" for r in range(1, world)], timedelta(seconds=LEAVE_WAIT_S))
        else:
            store.set(f"{left}{rank}", "1")
    except Exception as exc:  # rank 0: a peer ended right after finishing; a peer: rank 0 already left
        log.warning("rank %d/%d: leaving the finished run's process group: %s", rank, world, exc)


def _end_as_echo(store, key: str, rank: int, world: int, own: str) -> None:
    """Exit as a rank ended by a peer's failure: print the peer's error (once it is published) and
    this rank's own, which it caused."""
    try:
        store.wait([key], timedelta(seconds=ECHO_WAIT_S))
        cause = store.get(key).decode()
    except Exception:
        cause = "(not yet published: see the run's error.txt)"
    print(f"rank {rank}/{world}: ending, another rank failed: {cause}\n(here: {own})", file=sys.stderr)
    sys.stderr.flush()
    os._exit(PEER_FAILED_EXIT)
