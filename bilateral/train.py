"""run(spec, store) -> record: the one function every backend executes.

Train with validation every epoch, keep the best-by-validation and the last checkpoint, test once
at the end with the best one. A run that was interrupted resumes from its last checkpoint and, on
CPU, ends bit-identical to an uninterrupted one: data order and augmentation are a pure function of
(seed, epoch) and the global RNG (dropout) is saved with every checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import bilateral
from bilateral.assemble import build_model
from bilateral.data import (
    DeviceLoader,
    HierarchicalDataset,
    load_dataset,
    stratified_subset,
    validation_split,
)
from bilateral.data.beton import prepare_betons, split_parts
from bilateral.data.loaders import make_loader
from bilateral.errors import CheckpointError, ConfigError
from bilateral.experiment import RunSpec
from bilateral.models import Ensemble, count_parameters, load_state_strict
from bilateral.store import RunStore, SweepStore

log = logging.getLogger(__name__)
HEADS = ("fine", "coarse")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Splits:
    """Indices into the dataset's train and test arrays; val is held out of train."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def describe(self, spec: RunSpec) -> dict:
        digest = hashlib.sha256(self.val.tobytes()).hexdigest()[:16]
        return {
            "split_seed": spec.data.split_seed,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "val_indices_sha256": digest,
        }


@functools.lru_cache(maxsize=4)
def load_data(source: str, data_dir: str, verify_md5: bool) -> HierarchicalDataset:
    """Once per process: a local sweep decodes its dataset once for all its runs."""
    return load_dataset(source, cache_dir=data_dir, verify_md5=verify_md5)


def make_splits(data: HierarchicalDataset, spec: RunSpec) -> Splits:
    cfg = spec.data
    train, val = validation_split(data.train.fine, cfg.val_size, cfg.split_seed)
    if cfg.train_subset:
        train = train[stratified_subset(data.train.fine[train], cfg.train_subset, cfg.split_seed)]
    test = np.arange(len(data.test))
    if cfg.test_subset:
        test = stratified_subset(data.test.fine, cfg.test_subset, cfg.split_seed)
    return Splits(train, val, test)


def distributed() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group this process is in; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


EpochCallback = Callable[[dict], None]


def run(
    spec: RunSpec,
    store: SweepStore,
    device: str = "auto",
    data_dir: str = "data",
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train (or, for an ensemble, assemble) one spec and return its record; a finished run is skipped.

    Inside an initialised torch.distributed group (Ray Train, Slurm tasks) the run trains with DDP:
    each rank takes its share of every global batch of spec.train.batch_size, and rank 0 alone
    writes. on_epoch receives each epoch's metrics row (progress reporting for a backend).
    """
    run_store = store.run(spec.run_id)
    if run_store.is_finished():
        return run_store.read_record()
    rank, world = distributed()
    if spec.train.batch_size % world:
        raise ConfigError(
            f"train.batch_size={spec.train.batch_size} does not split over {world} DDP workers: "
            "choose a batch size divisible by the number of workers"
        )
    if rank == 0:
        run_store.write_spec(spec)
    dev = resolve_device(device)
    data = load_data(spec.data.source, data_dir, spec.data.verify_md5)
    splits = make_splits(data, spec)
    mean, std = data.mean_std()
    # ffcv: the split's .beton files, written by the first run that needs them
    betons = prepare_betons(data, split_parts(splits), data_dir) if spec.data.loader == "ffcv" else {}

    def loader(part: str, split, indices, train: bool, batch_size: int) -> DeviceLoader:
        return make_loader(
            spec.data.loader,
            split,
            indices,
            batch_size,
            dev,
            mean,
            std,
            train=train,
            seed=spec.init_seed,
            channels_last=spec.train.channels_last,
            beton=betons.get(part),
            rank=rank,
            world=world if train else 1,  # every rank evaluates the whole val and test splits
        )

    val = loader("val", data.train, splits.val, False, spec.train.eval_batch_size)
    test = loader("test", data.test, splits.test, False, spec.train.eval_batch_size)
    if spec.trains:
        train = loader("train", data.train, splits.train, True, spec.train.batch_size)
        model, stats = _train(spec, store, run_store, data, train, val, dev, on_epoch)
    else:
        model, stats = _assemble_ensemble(spec, store, data, dev)
    started = time.time()
    val_metrics, _ = evaluate(model, val, spec, dev)
    test_metrics, outputs = evaluate(model, test, spec, dev)
    labels = {"fine": data.test.fine[splits.test], "coarse": data.test.coarse[splits.test]}
    predicted = {h: z.argmax(1).numpy() for h, z in outputs.items()}
    if "fine" in predicted:  # a fine prediction implies a coarse one through the hierarchy
        test_metrics["acc_coarse_from_fine"] = float(
            np.mean(data.fine_to_coarse[predicted["fine"]] == labels["coarse"])
        )
    record = {
        "run_id": spec.run_id,
        "model": spec.model_name,
        "kind": spec.kind,
        "backbone": spec.backbone_name,
        "seed": spec.seed,
        "member": spec.member,
        **{f"test_{k}": v for k, v in test_metrics.items()},
        **{f"val_{k}": v for k, v in val_metrics.items()},
        **stats,
        "wall_time_s": stats.pop("wall_s") + time.time() - started,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "workers": world,
        "data_fingerprint": data.fingerprint(),
        "split": splits.describe(spec),
        "versions": versions(),
        "spec": spec.to_dict(),
    }
    if rank != 0:
        return record
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
    hemisphere = spec.kind in ("hemisphere-fine", "hemisphere-coarse")
    decay = spec.optim.hemisphere_weight_decay if hemisphere else spec.optim.weight_decay
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
    """CE(fine) + CE(coarse) over the heads the model has."""
    labels = {"fine": fine, "coarse": coarse}
    return sum(F.cross_entropy(outputs[h].float(), labels[h], label_smoothing=smoothing) for h in outputs)


def _autocast(spec: RunSpec, dev: torch.device):
    if spec.train.bf16 and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _attach_hemispheres(spec: RunSpec, store: SweepStore, model: nn.Module) -> None:
    """Load the best checkpoints of this seed's two hemisphere runs into the bilateral net and freeze them."""
    for dep_id in spec.depends_on:
        dep = store.run(dep_id)
        if not dep.is_finished():
            raise CheckpointError(
                f"{spec.run_id} needs hemisphere run {dep_id}, which has not finished: rerun the sweep "
                "so that it trains first"
            )
        state = dep.load_checkpoint("best")["model"]
        side = model.left if dep.read_record()["kind"] == "hemisphere-fine" else model.right
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        load_state_strict(side, backbone, source=str(dep.path("checkpoints/best.pt")))
    model.freeze_hemispheres(update_bn_stats=spec.model.frozen_bn_update)


def _train(spec, store, run_store: RunStore, data, train: DeviceLoader, val: DeviceLoader, dev, on_epoch):
    torch.manual_seed(spec.init_seed)
    model = build_model(spec, data.num_fine, data.num_coarse)
    if spec.kind == "bilateral-specialised":
        _attach_hemispheres(spec, store, model)
    model.to(dev)
    torch.backends.cudnn.benchmark = True  # fixed 32x32 shapes: pick the fastest conv kernels once
    if spec.train.channels_last:
        model.to(memory_format=torch.channels_last)
    rank, world = distributed()
    if world > 1 and dev.type == "cuda":  # batch statistics over the global batch, as with one worker
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(spec, model)
    forward = model
    if world > 1:
        forward = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    forward = torch.compile(forward) if spec.train.compile else forward
    epochs, steps_per_epoch = spec.train.epochs, len(train)
    state = {
        "epoch": -1,
        "best_score": -math.inf,
        "best_epoch": -1,
        "train_time_s": 0.0,
        "wall_s": 0.0,
        "images": 0,
    }
    metrics = []
    if run_store.has_checkpoint("last"):
        last = run_store.load_checkpoint("last")
        load_state_strict(model, last["model"], source=str(run_store.path("checkpoints/last.pt")))
        optimizer.load_state_dict(last["optimizer"])
        torch.set_rng_state(last["rng_cpu"])
        if dev.type == "cuda" and "rng_cuda" in last:
            torch.cuda.set_rng_state(last["rng_cuda"], dev)
        state = {k: last[k] for k in state}
        metrics = [m for m in run_store.read_metrics() if m["epoch"] <= state["epoch"]]
        log.info("%s: resuming after epoch %d", spec.run_id, state["epoch"] + 1)
    start = state["epoch"] + 1
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=start * steps_per_epoch,
        desc=spec.run_id,
        unit="step",
        leave=False,
        mininterval=2.0,
        dynamic_ncols=True,
    )
    for epoch in range(start, epochs):
        model.train()
        train.set_epoch(epoch)
        tic = time.perf_counter()
        total_loss = torch.zeros((), device=dev)
        for i, (x, fine, coarse) in enumerate(train):
            if world > 1 and not getattr(train, "per_rank", False):  # global batch: this rank's share
                share = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
                x, fine, coarse = x[share], fine[share], coarse[share]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(spec, epoch * steps_per_epoch + i, epochs * steps_per_epoch)
            with _autocast(spec, dev):
                outputs = forward(x)
            loss = loss_fn(outputs, fine, coarse, spec.optim.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach()
            bar.update()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if world > 1:
            dist.all_reduce(total_loss)
            total_loss /= world
        seconds = time.perf_counter() - tic
        state["train_time_s"] += seconds
        state["images"] += steps_per_epoch * train.batch_size
        val_metrics, _ = evaluate(model, val, spec, dev)
        score = selection_score(val_metrics)
        row = {
            "epoch": epoch,
            "train_loss": float(total_loss) / max(1, steps_per_epoch),
            "images_per_s": steps_per_epoch * train.batch_size / seconds,
            "lr": optimizer.param_groups[0]["lr"],
            **{f"val_{k}": v for k, v in val_metrics.items()},
        }
        metrics.append(row)
        if on_epoch is not None:
            on_epoch({**row, "val_score": score, "epochs": epochs})
        bar.set_postfix(
            epoch=f"{epoch + 1}/{epochs}",
            loss=f"{row['train_loss']:.3f}",
            val=f"{score:.3f}",
            img_s=f"{row['images_per_s']:.0f}",
        )
        log.info(
            "%s epoch %d/%d loss %.4f val %.4f %.0f img/s",
            spec.run_id,
            epoch + 1,
            epochs,
            row["train_loss"],
            score,
            row["images_per_s"],
        )
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch)
        state["epoch"] = epoch
        state["wall_s"] += time.perf_counter() - tic
        if rank == 0:
            if improved:
                run_store.save_checkpoint("best", {"model": model.state_dict(), "epoch": epoch})
            run_store.write_metrics(metrics)  # before "last": a resume drops rows past the last checkpoint
            run_store.save_checkpoint(
                "last",
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    **({"rng_cuda": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}),
                    **state,
                },
            )
        if world > 1:
            dist.barrier()  # every rank sees this epoch's checkpoints before going on
    bar.close()
    load_state_strict(
        model, run_store.load_checkpoint("best")["model"], str(run_store.path("checkpoints/best.pt"))
    )
    stats = {
        "best_epoch": state["best_epoch"],
        "epochs": epochs,
        "resumed_from_epoch": start if start else None,
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "train_time_s": state["train_time_s"],
        "wall_s": state["wall_s"],
        "train_images_per_s": state["images"] / max(state["train_time_s"], 1e-9),
    }
    return model, stats


def selection_score(val_metrics: dict) -> float:
    """Mean validation accuracy over the model's heads: what picks checkpoints and ensemble members."""
    accs = [val_metrics[f"acc_{h}"] for h in HEADS if f"acc_{h}" in val_metrics]
    return float(np.mean(accs))


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
        net = build_model(RunSpec.from_dict(dep.read_record()["spec"]), data.num_fine, data.num_coarse)
        load_state_strict(net, dep.load_checkpoint("best")["model"], str(dep.path("checkpoints/best.pt")))
        nets.append(net)
    model = Ensemble(nets).to(dev)
    return model, {
        "members": [d.run_id for d in chosen],
        "params": count_parameters(model),
        "trainable_params": 0,
        "train_time_s": 0.0,
        "wall_s": 0.0,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DeviceLoader, spec: RunSpec, dev
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Per-head accuracy and loss over a whole split, plus the logits (on CPU) in loader order."""
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {}
    labels: dict[str, list[torch.Tensor]] = {"fine": [], "coarse": []}
    for x, fine, coarse in loader:
        with _autocast(spec, dev):
            outputs = model(x)
        for h, out in outputs.items():
            logits.setdefault(h, []).append(out.float().cpu())
        labels["fine"].append(fine.cpu())
        labels["coarse"].append(coarse.cpu())
    out = {h: torch.cat(v) for h, v in logits.items()}
    metrics = {}
    for h, z in out.items():
        y = torch.cat(labels[h])
        metrics[f"acc_{h}"] = float((z.argmax(1) == y).float().mean())
        metrics[f"loss_{h}"] = float(F.cross_entropy(z, y))
    metrics["score"] = selection_score(metrics)
    return metrics, out


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def versions() -> dict:
    """What produced a run: the code's commit (and whether it had local changes) and library versions."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "bilateral": bilateral.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
