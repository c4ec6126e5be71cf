"""The training loop, for one run or K fused ones: epochs of steps, validation, the best and last
checkpoints (bit-identical on resume: data order, augmentation and dropout are a pure function of
(seed, rank, epoch))."""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bilateral.compiling import compile_for_run
from bilateral.data.loaders import Loader
from bilateral.distributed import from_rank0, rank_and_world
from bilateral.execution import autocast
from bilateral.experiment import RunSpec, group_name
from bilateral.interrupt import shielded
from bilateral.models import count_parameters, load_state_strict
from bilateral.models.fused import (
    fuse,
    fuse_optimizer_states,
    stack_inputs,
    unfuse,
    unfuse_optimizer_state,
)
from bilateral.progress import bar as progress_bar
from bilateral.store import SweepStore
from bilateral.tracking import RunTracker
from bilateral.training.checkpoints import (
    STATE_KEYS,
    build_members,
    checkpoint_due,
    fresh_state,
    host_copy,
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


def train_members(
    specs: list[RunSpec], store: SweepStore, data, trains: list[Loader], val: Loader, dev, on_epoch, precision
):
    """The training loop, for one run or K fused ones; returns [(model with its best weights, stats)]."""
    spec, k = specs[0], len(specs)  # members share every hyperparameter (RunSpec.fusion_key)
    run_stores = [store.run(s.run_id) for s in specs]
    members = build_members(specs, store, data)
    lasts = load_last(specs, run_stores, members)
    net = fuse(members) if k > 1 else members[0]
    net.to(dev)
    torch.backends.cudnn.benchmark = True  # fixed 32x32 shapes: pick the fastest conv kernels once
    if spec.train.channels_last:
        net.to(memory_format=torch.channels_last)
    rank, world = rank_and_world()
    if world > 1 and dev.type == "cuda" and spec.train.sync_bn:  # statistics of the global batch
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    optimizer = make_optimizer(spec, net)
    forward = net
    if world > 1:
        forward = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    fallbacks = None  # with train.compile: the functions dynamo left eager
    if spec.train.compile:
        forward, fallbacks = compile_for_run(forward, store.root / "compile-cache", torch.get_num_threads())
    epochs, steps_per_epoch = spec.train.epochs, len(trains[0])
    states = [fresh_state() for _ in specs]
    metrics: list[list[dict]] = [[] for _ in specs]
    if lasts is not None:
        saved = [last["optimizer"] for last in lasts]
        optimizer.load_state_dict(fuse_optimizer_states(saved, net) if k > 1 else saved[0])
        fresh = fresh_state()  # counters a checkpoint of an older version lacks start from zero
        states = [{key: last.get(key, fresh[key]) for key in STATE_KEYS} for last in lasts]
        metrics = [[m for m in rs.read_metrics() if m["epoch"] <= states[0]["epoch"]] for rs in run_stores]
        log.info("%s: resuming after epoch %d", ", ".join(s.run_id for s in specs), states[0]["epoch"] + 1)
    start = states[0]["epoch"] + 1
    trackers = (  # rank 0 alone tracks
        [RunTracker(rs.root, s, start) for s, rs in zip(specs, run_stores, strict=True)] if rank == 0 else []
    )
    pending_best: list[dict | None] = [None] * k
    name = group_name(specs)
    bar = progress_bar(
        total=epochs * steps_per_epoch,
        initial=start * steps_per_epoch,
        desc=name,
        unit="step",
        leave=False,
        mininterval=2.0,
    )

    def write_checkpoint(model_states, optimizer_states, states, pending_best, metrics) -> None:
        with shielded():  # a signal waits until best.pt, metrics.jsonl and last.pt agree
            for j, (state, rs) in enumerate(zip(states, run_stores, strict=True)):
                if pending_best[j] is not None:
                    rs.save_checkpoint("best", pending_best[j])
                rs.write_metrics(metrics[j])  # before "last": a resume drops rows past the last checkpoint
                rs.save_checkpoint(
                    "last", {"model": model_states[j], "optimizer": optimizer_states[j], **state}
                )

    timed = spec.train.checkpoint_minutes is not None  # else every checkpoint_every epochs
    written_at = time.monotonic()
    unwritten = None  # time-based: the last epoch end not yet on disk, written if the loop is left early
    try:
        for epoch in range(start, epochs):
            net.train()
            torch.manual_seed(epoch_seed(spec.init_seed, rank, epoch))  # this rank's dropout masks
            for train in trains:
                train.set_epoch(epoch)
            tic = time.perf_counter()
            total_loss = torch.zeros(k, device=dev)
            images = 0  # the images this epoch trained on, over all ranks
            for i, batches in enumerate(zip(*trains, strict=True)):
                xs, fines, coarses = (list(t) for t in zip(*batches, strict=True))
                images += len(xs[0]) * (world if getattr(trains[0], "per_rank", False) else 1)
                if world > 1 and not getattr(trains[0], "per_rank", False):  # global batch: this rank's share
                    share = slice(rank * len(xs[0]) // world, (rank + 1) * len(xs[0]) // world)
                    xs, fines, coarses = (
                        [x[share] for x in xs],
                        [f[share] for f in fines],
                        [c[share] for c in coarses],
                    )
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(spec, epoch * steps_per_epoch + i, epochs * steps_per_epoch)
                with autocast(precision, dev):
                    outputs = forward(stack_inputs(xs) if k > 1 else xs[0])
                per_member = member_outputs(outputs, k)
                losses = torch.stack(
                    [
                        loss_fn(out, f, c, spec.optim.label_smoothing)
                        for out, f, c in zip(per_member, fines, coarses, strict=True)
                    ]
                )
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                total_loss += losses.detach()
                bar.update()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if world > 1:
                dist.all_reduce(total_loss)
                total_loss /= world
            seconds = time.perf_counter() - tic
            evaluated = time.perf_counter()
            validates = (epoch + 1) % spec.train.eval_every == 0 or epoch == epochs - 1
            val_results = evaluate_members(net, val, spec, dev, k) if validates else [({}, None)] * k
            eval_seconds = time.perf_counter() - evaluated
            rows = []
            for j, (val_metrics, _) in enumerate(val_results):
                rows.append(
                    {
                        "epoch": epoch,
                        "train_loss": float(total_loss[j]) / max(1, steps_per_epoch),
                        "images_per_s": images / seconds,
                        "lr": optimizer.param_groups[0]["lr"],
                        **{f"val_{key}": v for key, v in val_metrics.items()},
                    }
                )
                metrics[j].append(rows[-1])
            for tracker, row in zip(trackers, rows, strict=False):  # rank 0 alone tracks
                tracker.epoch(row)
            progress = progress_row(rows, epochs)
            if on_epoch is not None:
                on_epoch(progress)
            val_text = f"{progress['val_score']:.4f}" if validates else "-"  # not validated this epoch
            bar.set_postfix(
                epoch=f"{epoch + 1}/{epochs}",
                loss=f"{progress['train_loss']:.3f}",
                val=val_text,
                img_s=f"{progress['images_per_s']:.0f}",
            )
            log.info(
                "%s epoch %d/%d loss %.4f val %s %.0f img/s",
                name,
                epoch + 1,
                epochs,
                progress["train_loss"],
                val_text,
                progress["images_per_s"],
            )
            checkpoint = checkpoint_due(spec, epoch, epochs, written_at, world)
            improved = [
                validates and rows[j]["val_score"] > state["best_score"] for j, state in enumerate(states)
            ]
            model_states = None
            if checkpoint or any(improved) or timed:
                model_states = unfuse(net, members[0], k) if k > 1 else [net.state_dict()]
            for j, state in enumerate(states):
                if improved[j]:
                    state.update(best_score=rows[j]["val_score"], best_epoch=epoch)
                    # held until the next `last` is written, so that best.pt and last.pt always agree
                    pending_best[j] = {"model": host_copy(model_states[j]), "epoch": epoch}
                state["epoch"] = epoch
                state["train_time_s"] += seconds
                state["images"] += images
            saved = time.perf_counter()
            if rank == 0 and (checkpoint or timed):
                optimizer_states = (
                    unfuse_optimizer_state(optimizer.state_dict(), net, members[0], k)
                    if k > 1
                    else [optimizer.state_dict()]
                )
                if checkpoint:
                    unwritten = None  # before the write: a stop inside it must not write an older one
                    write_checkpoint(model_states, optimizer_states, states, pending_best, metrics)
                else:  # held on the host, written at a stop: what a preemption would otherwise lose
                    unwritten = host_tree((model_states, optimizer_states, states, pending_best, metrics))
            if checkpoint:
                pending_best = [None] * k
                written_at = time.monotonic()
            if world > 1 and checkpoint:
                dist.barrier()  # every rank sees this epoch's checkpoints before going on
            wall = time.perf_counter() - tic
            for state in states:
                state["checkpoint_time_s"] += (time.perf_counter() - saved) / k
                state["eval_time_s"] += eval_seconds / k
                state["wall_s"] += wall / k  # a fused member's share of the group's time
    except BaseException as stop:  # SIGTERM, Ctrl-C, submitit's exit after a USR2 requeue, a failure
        if unwritten is not None:
            log.warning(
                "%s: %s; writing the checkpoint held since epoch %d ended",
                name,
                type(stop).__name__,
                unwritten[2][0]["epoch"] + 1,
            )
            write_checkpoint(*unwritten)
        raise
    finally:
        if fallbacks is not None:
            fallbacks.detach()
    bar.close()
    if fallbacks is not None and fallbacks.functions:
        log.warning(
            "%s: torch.compile ran %s eagerly (recompile limit)", name, ", ".join(fallbacks.functions)
        )
    for tracker, state in zip(trackers, states, strict=False):
        tracker.finish(state["best_score"])
    finals = [net] if k == 1 else members
    trained = []
    for model, state, rs in zip(finals, states, run_stores, strict=True):
        model.to(dev)
        if spec.train.channels_last:
            model.to(memory_format=torch.channels_last)
        tested = tested_checkpoint(spec)
        weights = from_rank0(
            lambda rs=rs, t=tested: rs.load_checkpoint(t)["model"]
        )  # rank 0's, on every rank
        load_state_strict(model, weights, str(rs.path(f"checkpoints/{tested}.pt")))
        stats = {
            "best_epoch": state["best_epoch"],
            "tested_checkpoint": tested,
            "tested_epoch": state["best_epoch"] if tested == "best" else epochs - 1,
            "epochs": epochs,
            "resumed_from_epoch": start if start else None,
            "params": count_parameters(model),
            "trainable_params": count_parameters(model, trainable_only=True),
            "trained_parts": trained_parts(model),
            "compile_fallbacks": None if fallbacks is None else fallbacks.functions,  # [] = all compiled
            "train_time_s": state["train_time_s"],
            "eval_time_s": state["eval_time_s"],
            "checkpoint_time_s": state["checkpoint_time_s"],
            "wall_s": state["wall_s"],
            "train_images": state["images"],  # counted batch by batch: the images actually seen
            "train_images_per_s": state["images"] / max(state["train_time_s"], 1e-9),
        }
        trained.append((model, stats))
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
