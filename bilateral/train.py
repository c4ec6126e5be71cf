"""run(spec, store) -> record: the one function every backend executes.

Train with validation every epoch, keep the best-by-validation and the last checkpoint, test once
at the end with the best one. A run that was interrupted resumes from its last checkpoint and, on
CPU, ends bit-identical to an uninterrupted one: data order, augmentation and the global RNG
(dropout) are a pure function of (seed, epoch), and of the rank under DDP.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bilateral.assemble import build_model
from bilateral.compiling import compile_for_run
from bilateral.data.beton import prepare_betons, split_parts
from bilateral.data.loader import LoaderOptions
from bilateral.data.loaders import Loader, make_loader
from bilateral.distributed import fail_together, from_rank0, rank_and_world
from bilateral.errors import CheckpointError, ConfigError
from bilateral.execution import autocast, choose_precision, resolve_device, tf32_state, versions
from bilateral.experiment import RunSpec, group_name, settings_label
from bilateral.interrupt import shielded
from bilateral.models import Ensemble, count_parameters, load_state_strict
from bilateral.models.fused import (
    fuse,
    fuse_optimizer_states,
    split_outputs,
    stack_inputs,
    unfuse,
    unfuse_optimizer_state,
)
from bilateral.models.profile import profile_backbone
from bilateral.placement import Placement
from bilateral.progress import bar as progress_bar
from bilateral.run_data import Splits, check_batches, make_splits, run_data
from bilateral.store import RunStore, SweepStore
from bilateral.tracking import RunTracker, trackers_of

log = logging.getLogger(__name__)
HEADS = ("fine", "coarse")


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The global RNG's seed (dropout masks) for one epoch of one DDP rank: different per rank, and
    a pure function of (run, rank, epoch), so a resumed run draws the same masks again."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{epoch}".encode()).digest()[:8], "little")


EpochCallback = Callable[[dict], None]


def run(
    spec: RunSpec,
    store: SweepStore,
    device: str = "auto",
    data_dir: str = "data",
    on_epoch: EpochCallback | None = None,
    placement: Placement | None = None,
) -> dict:
    """Train (or, for an ensemble, assemble) one spec and return its record; a finished run is skipped.

    Inside an initialised torch.distributed group (Ray Train, Slurm tasks) the run trains with DDP:
    each rank takes its share of every global batch of spec.train.batch_size, and rank 0 alone
    writes. on_epoch receives each epoch's metrics row (progress reporting for a backend). placement
    (bilateral.placement) is what the backend gave the run; it is kept in the record.
    """
    return run_group([spec], store, device, data_dir, on_epoch, placement)[0]


def run_group(
    specs: list[RunSpec],
    store: SweepStore,
    device: str = "auto",
    data_dir: str = "data",
    on_epoch: EpochCallback | None = None,
    placement: Placement | None = None,
) -> list[dict]:
    """Train K runs of one fusion key (RunSpec.fusion_key) at once, as one fused network, and return
    their records; K = 1 is a plain run.

    Each member keeps its own initialisation, data order, augmentation, optimiser state,
    checkpoints, best epoch and record, in the same files and format as a run trained alone, so a
    fused run resumes unfused and the other way round. Fused, one global RNG draws the dropout
    masks of all members (same distribution, other masks than apart). on_epoch gets one row per
    epoch: the run's own, or for K > 1 the members' mean loss and score and their summed images/s.
    """
    finished = from_rank0(  # one decision for every DDP rank: shared storage may show ranks different files
        lambda: {
            s.run_id: store.run(s.run_id).read_record() for s in specs if store.run(s.run_id).is_finished()
        }
    )
    todo = [s for s in specs if s.run_id not in finished]
    if todo:

        def record_failure(text: str) -> None:
            for spec in todo:
                store.run(spec.run_id).write_error(text)

        with fail_together(group_name(todo), record_failure):  # DDP: one rank's failure ends every rank
            records = _run_unfinished(todo, store, device, data_dir, on_epoch, placement)
        finished.update({r["run_id"]: r for r in records})
    return [finished[s.run_id] for s in specs]


def _check_fusable(specs: list[RunSpec], world: int) -> None:
    if len(specs) == 1:
        return
    if len({s.fusion_key for s in specs}) != 1 or specs[0].fusion_key is None:
        raise ConfigError(
            f"runs {', '.join(s.run_id for s in specs)} cannot train fused: fused runs must share model "
            "kind, backbones, data, model, optimiser and training settings (bilateral.sweep.fusion_groups "
            "groups them so)"
        )
    if world > 1:
        raise ConfigError("fused training (--fuse K > 1) with DDP workers is not supported: use one of them")


def _run_unfinished(specs, store, device, data_dir, on_epoch, placement) -> list[dict]:
    rank, world = rank_and_world()
    _check_fusable(specs, world)
    spec = specs[0]  # data, batch sizes and loader settings are the same for every member
    if spec.train.batch_size % world:
        raise ConfigError(
            f"train.batch_size={spec.train.batch_size} does not split over {world} DDP workers: "
            "choose a batch size divisible by the number of workers"
        )
    if rank == 0:
        for s in specs:
            store.run(s.run_id).write_spec(s)
    dev = resolve_device(device)
    if dev.type == "cuda":  # FFCV's streams and events, and every context, on this run's GPU, not GPU 0
        torch.cuda.set_device(dev)
        if placement is not None and placement.memory_fraction is not None:
            torch.cuda.set_per_process_memory_fraction(placement.memory_fraction, dev)
    precision, why = choose_precision(spec, dev)
    if why:
        log.warning("%s", why)
    resources = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "device_index": dev.index,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "precision_note": why,
        "tf32": tf32_state(dev),  # fp32 convolutions in TF32 on Ampere and newer (bilateral/execution.py)
        "tracking": trackers_of(spec),  # tensorboard (or why not), mlflow, wandb
        "placement": placement.to_dict() if placement is not None else None,
    }
    prepared = time.perf_counter()
    source = run_data(spec.data, data_dir)
    data = spec.kind_spec.dataset(spec, store, source, dev)  # e.g. coarse labels replaced by clusters
    splits = make_splits(data, spec)
    check_batches(splits, spec)
    mean, std = data.mean_std()
    # ffcv: the split's .beton files, written by the first run that needs them
    betons = prepare_betons(data, split_parts(splits), data_dir) if spec.data.loader == "ffcv" else {}

    def loader(part: str, split, indices, train: bool, batch_size: int, seed: int = 0) -> Loader:
        return make_loader(
            spec.data.loader,
            split,
            indices,
            LoaderOptions(
                batch_size, dev, mean, std, train, seed, spec.train.channels_last, data.flip_invariant
            ),
            beton=betons.get(part),
            rank=rank,
            world=world if train else 1,  # every rank evaluates the whole val and test splits
        )

    val = loader("val", data.train, splits.val, False, spec.train.eval_batch_size)
    test = None  # launch/tune.py's runs never look at the test split
    if spec.train.evaluate_test:
        test = loader("test", data.test, splits.test, False, spec.train.eval_batch_size)
    resources["data_prep_time_s"] = time.perf_counter() - prepared  # decode, split, .beton files, loaders
    if spec.trains:
        first = loader("train", data.train, splits.train, True, spec.train.batch_size, spec.data_seed)
        trains = [first, *(first.with_seed(s.data_seed) for s in specs[1:])]  # each member's own stream
        trained = _train(specs, store, data, trains, val, dev, on_epoch, precision)
    else:
        trained = [_assemble_ensemble(spec, store, data, dev)]
    fused_with = [s.run_id for s in specs] if len(specs) > 1 else []
    return [
        _finish(
            s,
            store.run(s.run_id),
            model,
            {**stats, **resources, "fused_with": fused_with},
            data,
            source.fingerprint(),
            splits,
            val,
            test,
            dev,
        )
        for s, (model, stats) in zip(specs, trained, strict=True)
    ]


def _finish(
    spec, run_store: RunStore, model, stats: dict, data, fingerprint: str, splits: Splits, val, test, dev
) -> dict:
    """Validate and test the chosen checkpoint once; rank 0 writes the predictions and the record.
    fingerprint is the source data's (the analysis checks it), before a kind replaced any labels."""
    rank, world = rank_and_world()
    started = time.time()
    wall_s = stats.pop("wall_s")
    val_metrics, _ = evaluate(model, val, spec, dev)
    test_metrics, outputs = evaluate(model, test, spec, dev) if test is not None else ({}, {})
    relabelled = data.fingerprint() != fingerprint
    if relabelled:  # its coarse head learnt other labels (say, clusters): no coarse accuracy to compare
        val_metrics, test_metrics = (
            {k.replace("_coarse", "_relabelled"): v for k, v in m.items()}
            for m in (val_metrics, test_metrics)
        )
    labels = {"fine": data.test.fine[splits.test], "coarse": data.test.coarse[splits.test]}
    predicted = {h: z.argmax(1).numpy() for h, z in outputs.items()}
    if "fine" in predicted and data.hierarchical:  # a fine prediction implies a coarse one
        test_metrics["acc_coarse_from_fine"] = float(
            np.mean(data.fine_to_coarse[predicted["fine"]] == labels["coarse"])
        )
    record = {
        "run_id": spec.run_id,
        "model": spec.model_name,
        "base_model": spec.base_model,
        "settings": settings_label(spec.settings),  # the comparison row's own settings, if any
        "kind": spec.kind,
        "backbone": spec.backbone_name,
        "seed": spec.seed,
        "member": spec.member,
        "pairing": spec.data.pairing,  # seed: every arm of this seed saw data_seed's batches
        "data_seed": spec.data_seed if spec.trains else None,  # data order and augmentation draws
        "init_seed": spec.init_seed if spec.trains else None,  # initialisation and dropout masks
        **{f"test_{k}": v for k, v in test_metrics.items()},
        **{f"val_{k}": v for k, v in val_metrics.items()},
        **stats,
        "tuned": spec.tuned or None,  # {source, row, settings} where launch/tune.py chose its settings
        "wall_time_s": wall_s + time.time() - started,
        "workers": world,
        "data_fingerprint": fingerprint,
        "relabelled": data.name if relabelled else None,
        "labels": "hierarchical" if data.hierarchical else "independent",  # independent: no coarse-from-fine
        "image_size": data.image_size,
        "substrates": {b: profile_backbone(b, spec.model.width, data.image_size) for b in spec.backbones},
        "augment_flip": data.flip_invariant,
        "split": splits.describe(spec),
        "versions": versions(),
        "spec": spec.to_dict(),
    }
    if rank != 0:
        return record
    if test is not None:
        run_store.save_arrays(  # per-sample test outputs for the analysis
            "predictions.npz",
            {
                "test_index": splits.test,
                **{f"label_{h}": y for h, y in labels.items()},
                **{f"logits_{h}": z.numpy() for h, z in outputs.items()},
                **{f"correct_{h}": predicted[h] == labels[h] for h in predicted},
            },
        )
    run_store.write_record(record)
    return record


def _param_groups(spec: RunSpec, model: nn.Module) -> list[dict]:
    decay = spec.kind_spec.weight_decay(spec.optim)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": decay}]


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (L2 weight decay, as the authors) or SGD; the fused multi-tensor kernels on CUDA."""
    cfg = spec.optim
    groups = _param_groups(spec, model)
    fused = next(model.parameters()).is_cuda or None
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)
    return torch.optim.Adam(groups, lr=cfg.lr, fused=fused)


def lr_at(spec: RunSpec, step: int, total_steps: int) -> float:
    """Constant, or one-cycle: linear warm-up to lr, then linear decay to zero."""
    cfg = spec.optim
    if cfg.schedule == "constant":
        return cfg.lr
    warmup = max(1, math.ceil(cfg.warmup_fraction * total_steps))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def loss_fn(outputs: dict[str, torch.Tensor], fine: torch.Tensor, coarse: torch.Tensor, smoothing: float):
    """CE(fine) + CE(coarse) over the heads the model has, plus the loss a model computes itself
    ("loss": e.g. a self-supervised one, bilateral.models.ssl)."""
    labels = {"fine": fine, "coarse": coarse}
    terms = [
        F.cross_entropy(outputs[h].float(), labels[h], label_smoothing=smoothing)
        for h in HEADS
        if h in outputs
    ]
    if "loss" in outputs:
        terms.append(outputs["loss"].float())
    return sum(terms)


STATE_KEYS = (
    "epoch",
    "best_score",
    "best_epoch",
    "train_time_s",
    "eval_time_s",
    "checkpoint_time_s",
    "wall_s",
    "images",
)


def _fresh_state() -> dict:
    return {
        "epoch": -1,
        "best_score": -math.inf,
        "best_epoch": -1,
        "train_time_s": 0.0,
        "eval_time_s": 0.0,
        "checkpoint_time_s": 0.0,
        "wall_s": 0.0,
        "images": 0,
    }


def _build_members(specs: list[RunSpec], store: SweepStore, data) -> list[nn.Module]:
    """Each member initialised from its own seed, exactly as it would be trained alone."""
    members = []
    for spec in specs:
        torch.manual_seed(spec.init_seed)
        model = build_model(spec, data.num_fine, data.num_coarse)
        spec.kind_spec.prepare(spec, store, model)  # e.g. frozen hemispheres from their runs
        members.append(model)
    return members


def _load_last(
    specs: list[RunSpec], run_stores: list[RunStore], members: list[nn.Module]
) -> list[dict] | None:
    """The members' last checkpoints (weights loaded into `members`), or None when none has one.
    Under DDP rank 0 reads them and every rank gets its copy: all resume from the same epoch."""

    def read() -> list[dict | None]:
        return [rs.load_checkpoint("last") if rs.has_checkpoint("last") else None for rs in run_stores]

    lasts = from_rank0(read)
    epochs = [-1 if last is None else last["epoch"] for last in lasts]
    if len(set(epochs)) > 1:
        raise CheckpointError(
            f"runs {', '.join(s.run_id for s in specs)} stopped after different epochs {epochs} and "
            "cannot resume as one fused group: rerun the sweep (it groups runs by their last epoch), "
            "or run without --fuse"
        )
    if epochs[0] < 0:
        return None
    for model, last, rs in zip(members, lasts, run_stores, strict=True):
        load_state_strict(model, last["model"], source=str(rs.path("checkpoints/last.pt")))
    return lasts


def _train(
    specs: list[RunSpec], store: SweepStore, data, trains: list[Loader], val: Loader, dev, on_epoch, precision
):
    """The training loop, for one run or K fused ones; returns [(model with its best weights, stats)]."""
    spec, k = specs[0], len(specs)  # members share every hyperparameter (RunSpec.fusion_key)
    run_stores = [store.run(s.run_id) for s in specs]
    members = _build_members(specs, store, data)
    lasts = _load_last(specs, run_stores, members)
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
    states = [_fresh_state() for _ in specs]
    metrics: list[list[dict]] = [[] for _ in specs]
    if lasts is not None:
        saved = [last["optimizer"] for last in lasts]
        optimizer.load_state_dict(fuse_optimizer_states(saved, net) if k > 1 else saved[0])
        fresh = _fresh_state()  # counters a checkpoint of an older version lacks start from zero
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
                per_member = _per_member(outputs, k)
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
            progress = _progress_row(rows, epochs)
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
            checkpoint = _checkpoint_due(spec, epoch, epochs, written_at, world)
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
                    pending_best[j] = {"model": _host_copy(model_states[j]), "epoch": epoch}
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
                    unwritten = _host_tree((model_states, optimizer_states, states, pending_best, metrics))
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


def trained_parts(model: nn.Module) -> list[str]:
    """The model's top-level parts that trained (e.g. ["heads"] for frozen hemispheres)."""
    return [name for name, part in model.named_children() if any(p.requires_grad for p in part.parameters())]


def _checkpoint_due(spec: RunSpec, epoch: int, epochs: int, written_at: float, world: int) -> bool:
    """After the last epoch, and every train.checkpoint_every epochs or, with
    train.checkpoint_minutes, at the first epoch end that many minutes after the last write (rank
    0's clock decides for every DDP rank: they must write, and meet at the barrier, together)."""
    if epoch == epochs - 1:
        return True
    minutes = spec.train.checkpoint_minutes
    if minutes is None:
        return (epoch + 1) % spec.train.checkpoint_every == 0
    due = torch.tensor([time.monotonic() - written_at >= 60 * minutes])
    if world > 1:
        dist.broadcast(due, 0)
    return bool(due)


def _host_tree(tree):
    """A copy of nested dicts, lists and tuples whose tensors are on the host, which later training
    steps cannot change."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: _host_tree(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_host_tree(value) for value in tree)
    return tree


def _host_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict that later training steps cannot change."""
    return {name: t.detach().to("cpu", copy=True) for name, t in state.items()}


def _per_member(outputs: dict[str, torch.Tensor], k: int) -> list[dict[str, torch.Tensor]]:
    if k == 1:
        return [outputs]
    split = split_outputs(outputs, k)
    return [{h: z[j] for h, z in split.items()} for j in range(k)]


def _progress_row(rows: list[dict], epochs: int) -> dict:
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


def tested_checkpoint(spec: RunSpec) -> str:
    """The checkpoint a run is tested with: `best` on validation, or the last epoch's where the
    protocol asks for it (train.test_checkpoint=last). A hemisphere is always tested at `best`, the
    checkpoint the nets built on it load: never one the test set chose."""
    return "best" if spec.kind_spec.role in ("left", "right") else spec.train.test_checkpoint


def selection_score(val_metrics: dict) -> float:
    """Mean validation accuracy over the model's heads: what picks checkpoints and ensemble members.
    A model without heads (self-supervised) is picked by its own validation loss, lowest first."""
    accs = [val_metrics[f"acc_{h}"] for h in HEADS if f"acc_{h}" in val_metrics]
    return float(np.mean(accs)) if accs else -val_metrics["loss_model"]


def _assemble_ensemble(spec: RunSpec, store: SweepStore, data, dev) -> tuple[nn.Module, dict]:
    """Mean of logits of the top-k pool members, ranked by validation score (never by test)."""
    members = []
    for dep_id in spec.depends_on:
        dep = store.run(dep_id)
        if not dep.is_finished():
            raise CheckpointError(
                f"{spec.run_id} needs pool member {dep_id}, which has not finished: rerun the sweep"
            )
        record = dep.read_record()
        members.append((-record["val_score"], record["member"], dep))
    chosen = [dep for _, _, dep in sorted(members, key=lambda m: m[:2])[: spec.top_k]]
    nets = []
    for dep in chosen:
        record = dep.read_record()
        net = build_model(RunSpec.from_dict(record["spec"]), data.num_fine, data.num_coarse)
        tested = record.get("tested_checkpoint", "best")  # the weights its val_score ranked
        load_state_strict(
            net, dep.load_checkpoint(tested)["model"], str(dep.path(f"checkpoints/{tested}.pt"))
        )
        nets.append(net)
    model = Ensemble(nets).to(dev)
    return model, {
        "members": [d.run_id for d in chosen],
        "params": count_parameters(model),
        "trainable_params": 0,
        "train_time_s": 0.0,
        "wall_s": 0.0,
    }


def evaluate(model: nn.Module, loader: Loader, spec: RunSpec, dev) -> tuple[dict, dict[str, torch.Tensor]]:
    """Per-head accuracy and loss over a whole split, plus the logits (on CPU) in loader order."""
    return evaluate_members(model, loader, spec, dev, 1)[0]


@torch.no_grad()
def evaluate_members(
    model: nn.Module, loader: Loader, spec: RunSpec, dev, k: int
) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """evaluate() for each of the K members of a fused model (K = 1: a plain one); each sees every batch.

    Outputs stay on the device until the split is done: one copy to the host, not one per batch."""
    model.eval()
    logits: list[dict[str, list[torch.Tensor]]] = [{} for _ in range(k)]
    labels: dict[str, list[torch.Tensor]] = {"fine": [], "coarse": []}
    model_loss: list[list[torch.Tensor]] = [[] for _ in range(k)]  # a model's own loss, image-weighted
    for x, fine, coarse in loader:
        outputs = model(stack_inputs([x] * k) if k > 1 else x)
        for j, out in enumerate(_per_member(outputs, k)):
            for h, z in out.items():
                if h == "loss":
                    model_loss[j].append(z.detach().float() * len(x))
                else:
                    logits[j].setdefault(h, []).append(z.float())
        labels["fine"].append(fine)
        labels["coarse"].append(coarse)
    truth = {h: torch.cat(v).cpu() for h, v in labels.items()}
    results = []
    for member, own_loss in zip(logits, model_loss, strict=True):
        out = {h: torch.cat(v).cpu() for h, v in member.items()}
        metrics = {}
        for h, z in out.items():
            metrics[f"acc_{h}"] = float((z.argmax(1) == truth[h]).float().mean())
            metrics[f"loss_{h}"] = float(F.cross_entropy(z, truth[h]))
        if own_loss:
            metrics["loss_model"] = float(torch.stack(own_loss).sum()) / len(truth["fine"])
        metrics["score"] = selection_score(metrics)
        results.append((metrics, out))
    return results
