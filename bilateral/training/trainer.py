"""The training loop, for one run or K fused ones, as named phases over the members' state:
`fit` runs `epoch` (its `step`s), `validate`, `report` and `checkpoint` for every epoch left, and
`finish` loads the checkpoint each member is tested with.

A resumed run ends bit-identical to an uninterrupted one on CPU: data order, augmentation and the
global RNG (dropout) are a pure function of (seed, rank, epoch). Members keep their own
initialisation, data stream, optimiser state, checkpoints and record; `Network` owns fusing them
into one grouped network and taking them apart again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bilateral.compiling import compile_for_run
from bilateral.data.loaders import Loader
from bilateral.distributed import from_rank0, rank_and_world
from bilateral.execution import autocast
from bilateral.interrupt import shielded
from bilateral.models import count_parameters, load_state_strict
from bilateral.models.fused import fuse, fuse_optimizer_states, stack_inputs, unfuse, unfuse_optimizer_state
from bilateral.plan import RunSpec, group_name
from bilateral.progress import bar as progress_bar
from bilateral.store import RunStore, SweepStore
from bilateral.tracking import RunTracker
from bilateral.training.checkpoints import (
    STATE_KEYS,
    build_members,
    checkpoint_due,
    fresh_state,
    host_tree,
    load_last,
    trained_parts,
)
from bilateral.training.objective import loss_fn, lr_at, make_optimizer
from bilateral.training.scoring import evaluate_members, member_outputs, tested_checkpoint

log = logging.getLogger(__name__)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The global RNG's seed (dropout masks) for one epoch of one DDP rank: different per rank, and
    a pure function of (run, rank, epoch), so a resumed run draws the same masks again."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{epoch}".encode()).digest()[:8], "little")


@dataclass
class Member:
    """One run of the training: where it writes, its data stream, counters and metric rows."""

    spec: RunSpec
    store: RunStore
    stream: Loader
    state: dict = field(default_factory=fresh_state)
    metrics: list[dict] = field(default_factory=list)
    pending_best: dict | None = None  # held until the next `last`, so best.pt and last.pt agree


class Checkpoint(NamedTuple):
    """One member's files of one checkpoint: a pending `best` (or None), metrics.jsonl, `last`."""

    best: dict | None
    metrics: list[dict]
    last: dict


class Network:
    """The members' modules as the one network that trains (fused when K > 1), and back."""

    def __init__(self, modules: list[nn.Module]):
        self.modules, self.k = modules, len(modules)
        self.net = fuse(modules) if self.k > 1 else modules[0]

    def model_states(self) -> list[dict]:
        return unfuse(self.net, self.modules[0], self.k) if self.k > 1 else [self.net.state_dict()]

    def optimizer_states(self, optimizer: torch.optim.Optimizer) -> list[dict]:
        state = optimizer.state_dict()
        return unfuse_optimizer_state(state, self.net, self.modules[0], self.k) if self.k > 1 else [state]

    def load_optimizer(self, optimizer: torch.optim.Optimizer, saved: list[dict]) -> None:
        optimizer.load_state_dict(fuse_optimizer_states(saved, self.net) if self.k > 1 else saved[0])

    def finals(self) -> list[nn.Module]:
        """One module per member, to be loaded with its tested checkpoint."""
        return [self.net] if self.k == 1 else self.modules


class Trainer:
    """Trains K members (K = 1: one run) from their last checkpoint, or from scratch."""

    def __init__(
        self,
        specs: list[RunSpec],
        store: SweepStore,
        data,
        streams: list[Loader],
        val: Loader,
        dev: torch.device,
        on_epoch,
        precision: str,
    ):
        self.spec, self.val, self.dev, self.on_epoch, self.precision = specs[0], val, dev, on_epoch, precision
        self.members = [
            Member(s, store.run(s.run_id), stream) for s, stream in zip(specs, streams, strict=True)
        ]
        modules = build_members(specs, store, data)
        lasts = load_last(specs, [m.store for m in self.members], modules)
        self.network = Network(modules)
        net = self.network.net.to(dev)
        torch.backends.cudnn.benchmark = True  # fixed 32x32 shapes: pick the fastest conv kernels once
        if self.spec.train.channels_last:
            net.to(memory_format=torch.channels_last)
        self.rank, self.world = rank_and_world()
        if self.world > 1 and dev.type == "cuda" and self.spec.train.sync_bn:  # global batch statistics
            self.network.net = net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.optimizer = make_optimizer(self.spec, net)
        self.forward = net
        if self.world > 1:
            self.forward = DistributedDataParallel(
                net, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        self.fallbacks = None  # with train.compile: the functions dynamo left eager
        if self.spec.train.compile:
            self.forward, self.fallbacks = compile_for_run(
                self.forward, store.root / "compile-cache", torch.get_num_threads()
            )
        if lasts is not None:
            self._resume(lasts)
        self.start = self.members[0].state["epoch"] + 1
        self.epochs, self.steps_per_epoch = self.spec.train.epochs, len(streams[0])
        self.per_rank = getattr(streams[0], "per_rank", False)  # batches already this rank's share
        self.trackers = (
            [RunTracker(m.store.root, m.spec, self.start) for m in self.members] if self.rank == 0 else []
        )
        self.name = group_name(specs)
        self.timed = self.spec.train.checkpoint_minutes is not None  # else every checkpoint_every epochs
        self.written_at = time.monotonic()
        self.unwritten = None  # time-based: the last epoch end not yet on disk, written if fit is left early

    def _resume(self, lasts: list[dict]) -> None:
        self.network.load_optimizer(self.optimizer, [last["optimizer"] for last in lasts])
        fresh = fresh_state()  # counters a checkpoint of an older version lacks start from zero
        for member, last in zip(self.members, lasts, strict=True):
            member.state = {key: last.get(key, fresh[key]) for key in STATE_KEYS}
            member.metrics = [m for m in member.store.read_metrics() if m["epoch"] <= member.state["epoch"]]
        names = ", ".join(m.spec.run_id for m in self.members)
        log.info("%s: resuming after epoch %d", names, self.members[0].state["epoch"] + 1)

    def fit(self) -> list[tuple[nn.Module, dict]]:
        """Every epoch left, then each member's model with its tested weights and its stats."""
        self.bar = progress_bar(
            total=self.epochs * self.steps_per_epoch,
            initial=self.start * self.steps_per_epoch,
            desc=self.name,
            unit="step",
            leave=False,
            mininterval=2.0,
        )
        try:
            for epoch in range(self.start, self.epochs):
                tic = time.perf_counter()
                losses, images, seconds = self.epoch(epoch)
                rows, eval_seconds = self.validate(epoch, losses, images, seconds)
                self.report(epoch, rows)
                self.checkpoint(epoch, rows, images, seconds)
                for member in self.members:
                    member.state["eval_time_s"] += eval_seconds / len(self.members)
                    member.state["wall_s"] += (time.perf_counter() - tic) / len(self.members)  # a share
        except BaseException as stop:  # SIGTERM, Ctrl-C, submitit's exit after a USR2 requeue, a failure
            if self.unwritten is not None:
                epoch = self.unwritten[0].last["epoch"] + 1
                log.warning("%s: %s; writing the checkpoint held since epoch %d ended", self.name,
                            type(stop).__name__, epoch)  # fmt: skip
                self._write(self.unwritten)
            raise
        finally:
            if self.fallbacks is not None:
                self.fallbacks.detach()
        self.bar.close()
        return self.finish()

    def epoch(self, epoch: int) -> tuple[torch.Tensor, int, float]:
        """One pass over the training streams: (each member's summed loss, images over all ranks,
        seconds)."""
        self.network.net.train()
        torch.manual_seed(epoch_seed(self.spec.init_seed, self.rank, epoch))  # this rank's dropout masks
        for member in self.members:
            member.stream.set_epoch(epoch)
        tic = time.perf_counter()
        total = torch.zeros(len(self.members), device=self.dev)
        images = 0
        streams = [m.stream for m in self.members]
        for i, batches in enumerate(zip(*streams, strict=True)):
            images += len(batches[0][0]) * (self.world if self.per_rank else 1)
            total += self.step(batches, epoch * self.steps_per_epoch + i)
            self.bar.update()
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        return total, images, time.perf_counter() - tic

    def step(self, batches: tuple, step: int) -> torch.Tensor:
        """One optimisation step on each member's batch; returns their losses (no host sync)."""
        xs, fines, coarses = (list(t) for t in zip(*batches, strict=True))
        if self.world > 1 and not self.per_rank:  # a global batch: this rank's share of it
            share = slice(self.rank * len(xs[0]) // self.world, (self.rank + 1) * len(xs[0]) // self.world)
            xs, fines, coarses = (
                [x[share] for x in xs],
                [f[share] for f in fines],
                [c[share] for c in coarses],
            )
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.spec, step, self.epochs * self.steps_per_epoch)
        with autocast(self.precision, self.dev):
            outputs = self.forward(stack_inputs(xs) if len(xs) > 1 else xs[0])
        smoothing = self.spec.optim.label_smoothing
        outs = member_outputs(outputs, len(xs))
        losses = torch.stack(
            [loss_fn(o, f, c, smoothing) for o, f, c in zip(outs, fines, coarses, strict=True)]
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        return losses.detach()

    def validate(
        self, epoch: int, losses: torch.Tensor, images: int, seconds: float
    ) -> tuple[list[dict], float]:
        """Each member's metrics row of this epoch (validated every train.eval_every epochs and at
        the end), and the seconds validation took."""
        tic = time.perf_counter()
        validates = (epoch + 1) % self.spec.train.eval_every == 0 or epoch == self.epochs - 1
        k = len(self.members)
        results = (
            evaluate_members(self.network.net, self.val, self.spec, self.dev, k)
            if validates
            else [({}, None)] * k
        )
        rows = []
        for member, loss, (val_metrics, _) in zip(self.members, losses, results, strict=True):
            rows.append({
                "epoch": epoch,
                "train_loss": float(loss) / max(1, self.steps_per_epoch),
                "images_per_s": images / seconds,
                "lr": self.optimizer.param_groups[0]["lr"],
                **{f"val_{key}": v for key, v in val_metrics.items()},
            })  # fmt: skip
            member.metrics.append(rows[-1])
        return rows, time.perf_counter() - tic

    def report(self, epoch: int, rows: list[dict]) -> None:
        """Trackers (rank 0), the backend's progress callback, the progress bar and the log."""
        for tracker, row in zip(self.trackers, rows, strict=False):
            tracker.epoch(row)
        progress = progress_row(rows, self.epochs)
        if self.on_epoch is not None:
            self.on_epoch(progress)
        val = f"{progress['val_score']:.4f}" if "val_score" in progress else "-"  # "-": not validated
        loss, rate = progress["train_loss"], progress["images_per_s"]
        self.bar.set_postfix(
            epoch=f"{epoch + 1}/{self.epochs}", loss=f"{loss:.3f}", val=val, img_s=f"{rate:.0f}"
        )
        log.info(
            "%s epoch %d/%d loss %.4f val %s %.0f img/s", self.name, epoch + 1, self.epochs, loss, val, rate
        )

    def checkpoint(self, epoch: int, rows: list[dict], images: int, seconds: float) -> None:
        """A better validation score becomes the pending `best`; when due (bilateral.training.
        checkpoints.checkpoint_due) rank 0 writes best, metrics and last, and every rank meets."""
        due = checkpoint_due(self.spec, epoch, self.epochs, self.written_at, self.world)
        improved = [
            "val_score" in row and row["val_score"] > m.state["best_score"]
            for m, row in zip(self.members, rows, strict=True)
        ]
        model_states = self.network.model_states() if due or any(improved) or self.timed else None
        for j, member in enumerate(self.members):
            if improved[j]:
                member.state.update(best_score=rows[j]["val_score"], best_epoch=epoch)
                member.pending_best = {"model": host_tree(model_states[j]), "epoch": epoch}
            member.state.update(epoch=epoch)
            member.state["train_time_s"] += seconds
            member.state["images"] += images
        tic = time.perf_counter()
        if self.rank == 0 and (due or self.timed):
            optimizer_states = self.network.optimizer_states(self.optimizer)
            files = [
                Checkpoint(m.pending_best, m.metrics, {"model": model, "optimizer": optimizer, **m.state})
                for m, model, optimizer in zip(self.members, model_states, optimizer_states, strict=True)
            ]
            if due:
                self.unwritten = None  # before the write: a stop inside it must not write an older one
                self._write(files)
            else:  # held on the host, written at a stop: what a preemption would otherwise lose
                self.unwritten = [Checkpoint(*host_tree(tuple(f))) for f in files]
        if due:
            for member in self.members:
                member.pending_best = None
            self.written_at = time.monotonic()
            if self.world > 1:
                dist.barrier()  # every rank sees this epoch's checkpoints before going on
        for member in self.members:
            member.state["checkpoint_time_s"] += (time.perf_counter() - tic) / len(self.members)

    def _write(self, files: list[Checkpoint]) -> None:
        with shielded():  # a signal waits until best.pt, metrics.jsonl and last.pt agree
            for member, checkpoint in zip(self.members, files, strict=True):
                if checkpoint.best is not None:
                    member.store.save_checkpoint("best", checkpoint.best)
                member.store.write_metrics(checkpoint.metrics)  # before "last": a resume drops rows past it
                member.store.save_checkpoint("last", checkpoint.last)

    def finish(self) -> list[tuple[nn.Module, dict]]:
        """Each member's model at the checkpoint it is tested with (rank 0's, on every rank), and
        its stats for the record."""
        if self.fallbacks is not None and self.fallbacks.functions:
            log.warning("%s: torch.compile ran %s eagerly (recompile limit)", self.name,
                        ", ".join(self.fallbacks.functions))  # fmt: skip
        for tracker, member in zip(self.trackers, self.members, strict=False):
            tracker.finish(member.state["best_score"])
        tested = tested_checkpoint(self.spec)
        trained = []
        for model, member in zip(self.network.finals(), self.members, strict=True):
            model.to(self.dev)
            if self.spec.train.channels_last:
                model.to(memory_format=torch.channels_last)
            weights = from_rank0(lambda m=member: m.store.load_checkpoint(tested)["model"])
            load_state_strict(model, weights, str(member.store.path(f"checkpoints/{tested}.pt")))
            state = member.state
            trained.append((model, {
                "best_epoch": state["best_epoch"],
                "tested_checkpoint": tested,
                "tested_epoch": state["best_epoch"] if tested == "best" else self.epochs - 1,
                "epochs": self.epochs,
                "resumed_from_epoch": self.start if self.start else None,
                "params": count_parameters(model),
                "trainable_params": count_parameters(model, trainable_only=True),
                "trained_parts": trained_parts(model),
                "compile_fallbacks": None if self.fallbacks is None else self.fallbacks.functions,  # []: none
                "train_time_s": state["train_time_s"],
                "eval_time_s": state["eval_time_s"],
                "checkpoint_time_s": state["checkpoint_time_s"],
                "wall_s": state["wall_s"],
                "train_images": state["images"],  # counted batch by batch: the images actually seen
                "train_images_per_s": state["images"] / max(state["train_time_s"], 1e-9),
            }))  # fmt: skip
        return trained


def progress_row(rows: list[dict], epochs: int) -> dict:
    """One row for progress reports: the run's own, or the fused members' mean loss and score and
    their summed throughput."""
    if len(rows) == 1:
        return {**rows[0], "epochs": epochs}
    return {
        "epoch": rows[0]["epoch"],
        "epochs": epochs,
        "runs": len(rows),
        "train_loss": float(np.mean([r["train_loss"] for r in rows])),
        **({"val_score": float(np.mean([r["val_score"] for r in rows]))} if "val_score" in rows[0] else {}),
        "images_per_s": sum(r["images_per_s"] for r in rows),
    }
