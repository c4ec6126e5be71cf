"""Benchmarks, each printing ratios against a baseline measured in the same invocation.

    python launch/bench.py loaders                                            # synthetic data
    python launch/bench.py loaders --data cifar10-hier:../shared/data/cifar10-jpg
    python launch/bench.py loaders --data cifar100 --device cuda --batch-size 512 --workers 8
    python launch/bench.py train                                              # CPU: width 1/4
    python launch/bench.py train --device cuda --compile --data cifar100      # GPU: paper width
    python launch/bench.py pack                                               # CPU: P = cores
    python launch/bench.py pack --device cuda --data cifar100                 # GPU: P = 4

Each prints ratios against a plain PyTorch baseline measured in the same run; what each variant,
projection and mode means is in docs/performance.md ("What each benchmark measures").
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import queue
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from bilateral.assemble import build_model
from bilateral.config import SweepConfig, load_config
from bilateral.data.beton import prepare_betons
from bilateral.data.loaders import LOADERS, make_loader
from bilateral.data.memory_loader import LoaderOptions
from bilateral.data.split import stratified_subset
from bilateral.errors import ConfigError
from bilateral.execution import choose_precision, resolve_device
from bilateral.extras import require
from bilateral.models import UnilateralNet, build_backbone, count_parameters
from bilateral.plan import build_plan
from bilateral.run_data import load_data
from bilateral.store import RunStore, SweepStore
from bilateral.training.scoring import evaluate_members
from bilateral.training.trainer import Trainer


def _installed(module: str) -> bool:
    """Whether an optional library is there; a benchmark leaves out what it cannot run, and says so."""
    try:
        require(module, f"the {module} benchmark")
    except ConfigError as exc:
        print(f"skipped: {exc}", flush=True)
        return False
    return True


def _sync(device: torch.device) -> None:
    """Drain the device's queue, so that the clock sees the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(loader, epoch: int, device: torch.device) -> tuple[float, int]:
    loader.set_epoch(epoch)
    tic = time.perf_counter()
    images = 0
    for x, _, _ in loader:
        images += len(x)
    _sync(device)
    return time.perf_counter() - tic, images


def bench_loaders(args: argparse.Namespace) -> int:
    kinds = args.loaders.split(",")
    unknown = set(kinds) - set(LOADERS)
    if unknown:
        print(f"error: unknown loaders {sorted(unknown)}: choose from {', '.join(LOADERS)}", file=sys.stderr)
        return 2
    if "ffcv" in kinds and not _installed("ffcv"):
        kinds.remove("ffcv")
    torch.set_num_threads(args.workers)  # the memory loader's CPU ops get what the others get
    device = resolve_device(args.device)
    data = load_data(args.data, args.data_dir, True)
    split = data.train
    indices = _train_indices(data, args.subset)
    mean, std = data.mean_std()
    beton = (
        prepare_betons(data, {"train": ("train", indices)}, args.data_dir)["train"]
        if "ffcv" in kinds
        else None
    )
    print(
        f"{data.name}: {len(indices)} training images, batch {args.batch_size}, device {device}, "
        f"{args.workers} workers (FFCV threads / DataLoader processes / torch threads) on "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    )
    rows = []
    for kind in kinds:  # torch first: its worker processes fork before numba starts threads
        opts = LoaderOptions(args.batch_size, device, mean, std, train=True, seed=0)
        loader = make_loader(kind, split, indices, opts, beton=beton, workers=args.workers)
        warm, _ = epoch_seconds(loader, 0, device)
        seconds, images = 0.0, 0
        for epoch in range(1, args.epochs + 1):
            s, n = epoch_seconds(loader, epoch, device)
            seconds, images = seconds + s, images + n
        rows.append({"loader": kind, "images/s": images / seconds, "warm-up epoch s": warm})
        print(f"  {kind}: {images / seconds:,.0f} images/s (warm-up epoch {warm:.1f} s)", flush=True)
        del loader
    base = next((r["images/s"] for r in rows if r["loader"] == "torch"), None)
    for row in rows:
        row["vs torch"] = f"{row['images/s'] / base:.2f}x" if base else "-"
        row["images/s"] = f"{row['images/s']:,.0f}"
        row["warm-up epoch s"] = f"{row['warm-up epoch s']:.1f}"
    print(tabulate(rows, headers="keys", tablefmt="github"))
    return 0


def _macs(model: torch.nn.Module) -> int:
    """Multiply-accumulates of one forward pass on one 32x32 image (convolutions and linears)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] ** 2
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    return total


def _train_indices(data, subset: int | None) -> np.ndarray:
    """All training images, or a stratified subset: the same one in every process."""
    return stratified_subset(data.train.fine, subset, seed=0) if subset else np.arange(len(data.train))


def _endless(loaders: list) -> Iterator[tuple]:
    """The loaders' batches side by side, epoch after epoch."""
    epoch = 0
    while True:
        for loader in loaders:
            loader.set_epoch(epoch)
        yield from zip(*loaders, strict=True)  # same data, same length
        epoch += 1


def _bench_specs(variant: dict, args, data_source: str, width: float, runs: int) -> list:
    """The run specs of a variant: unilateral ResNet-9 runs of seeds 0..runs-1 (fused when more than
    one), Adam at a constant 1e-4 with weight decay 1e-5, at the variant's settings."""
    overrides = [
        "plan.models=[unilateral]",
        f"plan.seeds=[{','.join(map(str, range(runs)))}]",
        f"data.source={data_source}",
        f"data.loader={variant['loader']}",
        f"model.width={width}",
        "optim.name=adam",
        "optim.lr=1e-4",
        "optim.weight_decay=1e-5",
        "optim.hemisphere_weight_decay=1e-5",
        "optim.schedule=constant",
        "optim.label_smoothing=0.0",
        f"train.batch_size={args.batch_size}",
        f"train.channels_last={str(variant.get('channels_last', False)).lower()}",
        f"train.compile={str(variant.get('compile', False)).lower()}",
    ]
    return [s for s in build_plan(load_config("smoke", None, overrides)).runs if s.kind == "unilateral"]


class TrainingSteps:
    """One variant's training step, the real one (bilateral.training.trainer.Trainer.step), built
    and warmed up once and then timed in as many windows as asked: variants timed in turn, round
    after round, meet the same slow and fast moments of a shared machine, so their ratios stay fair."""

    def __init__(self, variant: dict, args, data, indices, device: torch.device, width: float) -> None:
        k = variant.get("fuse", 0)
        mean, std = data.mean_std()
        specs = _bench_specs(variant, args, args.data, width, max(k, 1))
        beton = None
        if variant["loader"] == "ffcv":
            beton = prepare_betons(data, {"train": ("train", indices)}, args.data_dir)["train"]
        opts = LoaderOptions(args.batch_size, device, mean, std, True, 0, variant.get("channels_last", False))
        first = make_loader(variant["loader"], data.train, indices, opts, beton=beton, workers=args.workers)
        self.loaders = [first, *(first.with_seed(seed) for seed in range(1, max(k, 1)))]  # as fused training
        self.runs = tempfile.TemporaryDirectory(prefix="bench-")  # the Trainer's (unwritten) run folders
        precision = "bf16" if variant.get("bf16") else "fp32"
        store = SweepStore(Path(self.runs.name))
        self.trainer = Trainer(specs, store, data, self.loaders, None, device, None, precision)
        self.trainer.network.net.train()
        self.device, self.images_per_step, self.steps = device, args.batch_size * max(k, 1), 0
        self.stream = _endless(self.loaders)  # not a method: a generator holding self would be a cycle,
        # freed only by the garbage collector, maybe at exit, after the loaders' threads are gone
        self.time(args.warmup)  # JIT, autotuning, allocator, DataLoader workers

    def time(self, steps: int) -> float:
        """Seconds that `steps` training steps take, the device's queue drained before and after."""
        _sync(self.device)
        tic = time.perf_counter()
        for _ in range(steps):
            self.trainer.step(next(self.stream), self.steps)
            self.steps += 1
        _sync(self.device)
        return time.perf_counter() - tic


def _train_rate(
    variant: dict, args, data, indices, device, width, barrier: Callable[[], None] | None = None
) -> tuple[float, float]:
    """(images/s, ms/step) over args.steps timed steps after args.warmup steps.

    barrier, if given, is called between the two, so that concurrent processes time the same window.
    """
    steps = TrainingSteps(variant, args, data, indices, device, width)
    if barrier:
        barrier()
    seconds = steps.time(args.steps)
    return args.steps * steps.images_per_step / seconds, 1000 * seconds / args.steps


SETTINGS = ("channels_last", "bf16", "compile")  # besides the loader, in the order of variant names


UNMEASURED = {  # why a preset's setting can lack a measured variant
    "loader": "its library is not installed",
    "channels_last": "not timed with the other settings",
    "bf16": "not timed with the other settings",
    "compile": "time it with --compile",
}


@dataclass
class Overheads:
    """A unilateral ResNet-9's per-epoch costs outside the training steps, as measured here."""

    eval_s_per_image: float  # one fp32 evaluation pass over a preset's validation split, per image
    last_s: float  # one `last` checkpoint: model + Adam state
    best_s: float  # one `best` checkpoint: model


def _settings(variant: dict) -> dict:
    """How a variant trains, in the terms of a preset's config."""
    return {"loader": variant["loader"], **{key: bool(variant.get(key)) for key in SETTINGS}}


def _describe(settings: dict) -> str:
    """A variant's name from its settings: 'memory + channels_last + bf16'."""
    return " + ".join([settings["loader"], *(key for key in SETTINGS if settings[key])])


def _variant_for(cfg: SweepConfig, device: torch.device, variants: list[dict]) -> tuple[dict, list[str]]:
    """The measured variant that trains as the preset's runs do on this device, or the closest one
    (fewest settings unlike, the first of equals), and notes of every difference from the config."""
    precision, why = choose_precision(build_plan(cfg).runs[0], device)
    wanted = {"loader": cfg.data.loader, "bf16": precision == "bf16",
              "channels_last": cfg.train.channels_last, "compile": cfg.train.compile}  # fmt: skip
    notes = [why] if why else []
    singles = [v for v in variants if not v.get("fuse")]
    chosen = min(singles, key=lambda v: sum(_settings(v)[k] != wanted[k] for k in wanted))
    unlike = [f"{k}: {UNMEASURED[k]}" for k in wanted if _settings(chosen)[k] != wanted[k]]
    if unlike:
        notes.append(
            f"{_describe(wanted)} was not measured in this invocation; projecting from the closest "
            f"measured variant, {chosen['name']} (unlike in {'; '.join(unlike)})"
        )
    return chosen, notes


def _eval_seconds_per_image(cfg: SweepConfig, data, indices, device, width: float) -> float:
    """Seconds per image of evaluating as training does each epoch (evaluate_members: fp32, no
    autocast, the preset's eval batch and channels_last, the memory loader), over up to
    data.val_size of the images, after one untimed pass (cudnn autotuning)."""
    mean, std = data.mean_std()
    images = indices[: cfg.data.val_size]
    opts = LoaderOptions(cfg.train.eval_batch_size, device, mean, std, False, 0, cfg.train.channels_last)
    loader = make_loader("memory", data.train, images, opts)
    model = UnilateralNet(build_backbone("resnet9", width), data.num_fine, data.num_coarse).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spec = build_plan(cfg).runs[0]
    evaluate_members(model, loader, spec, device, 1)
    _sync(device)
    tic = time.perf_counter()
    evaluate_members(model, loader, spec, device, 1)
    _sync(device)
    return (time.perf_counter() - tic) / len(images)


def _checkpoint_seconds(data, device: torch.device, width: float) -> tuple[float, float]:
    """Median seconds of 3 writes each of `last` (model + Adam state) and `best` (model) with
    RunStore.save_checkpoint, which fsyncs, into a temporary directory."""
    model = UnilateralNet(build_backbone("resnet9", width), data.num_fine, data.num_coarse).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # Adam's moments exist after the first step
    last = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 0}
    best = {"model": model.state_dict(), "epoch": 0}
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp))
        last_s = _median_seconds(lambda: store.save_checkpoint("last", last))
        best_s = _median_seconds(lambda: store.save_checkpoint("best", best))
    return last_s, best_s


def _median_seconds(write: Callable[[], None], times: int = 3) -> float:
    """One write's time is at the mercy of the disk's other work: the median of a few."""
    seconds = []
    for _ in range(times):
        tic = time.perf_counter()
        write()
        seconds.append(time.perf_counter() - tic)
    return float(np.median(seconds))


def _projected_hours(cfg: SweepConfig, images_per_s: float, overheads: Overheads) -> dict[str, float]:
    """Hours of a preset's whole plan, one run at a time, for a unilateral ResNet-9 of the config's
    model.width that trains at images_per_s: training steps, evaluation every train.eval_every
    epochs and checkpoints, each run weighed by its forward cost (training, evaluation) or its parameters
    (checkpoints) against that network."""
    base = UnilateralNet(build_backbone("resnet9", cfg.model.width), 100, 20)
    base_macs, base_params = _macs(base), count_parameters(base)
    train_images = 50_000 - cfg.data.val_size  # CIFAR-100
    hours = dict.fromkeys(("training", "evaluation", "checkpoint"), 0.0)
    for spec in build_plan(cfg).runs:
        if not spec.trains:
            continue
        model = build_model(spec, 100, 20)
        forward = _macs(model) / base_macs
        # frozen backbones: forward only, no backward (about a third of a step)
        step = forward if spec.kind_spec.trains_backbones(spec) else forward / 3
        epochs = spec.train.epochs
        writes = -(-epochs // spec.train.checkpoint_every)  # every N epochs and after the last one
        validations = -(-epochs // spec.train.eval_every)  # likewise
        hours["training"] += epochs * train_images * step / images_per_s / 3600
        hours["evaluation"] += validations * cfg.data.val_size * forward * overheads.eval_s_per_image / 3600
        # `best` at every write: an upper bound (validation improves most epochs early on)
        share = count_parameters(model) / base_params
        hours["checkpoint"] += writes * (overheads.last_s + overheads.best_s) * share / 3600
    return hours


def _hours(h: float) -> str:
    """Two decimals, or two significant digits below an hour: a checkpoint's share is not 0.00."""
    return f"{h:,.2f}" if h >= 1 else f"{h:.2g}"


def _print_projections(rates: dict[str, float], variants: list[dict], data, indices, device, width) -> None:
    """Each preset's wall time from the variant that trains as it does, with evaluation and checkpoints."""
    last_s, best_s = _checkpoint_seconds(data, device, width)
    print(
        f"\nprojected wall time of each preset's whole plan, one run at a time ({device}, width {width}):\n"
        "  training steps at the rate of the variant that trains as the preset does, the fp32 evaluation\n"
        "  of data.val_size images every train.eval_every epochs, and every train.checkpoint_every epochs\n"
        "  `last` and `best`"
        f" (an upper bound), measured here: `last` {last_s:.3f} s, `best` {best_s:.3f} s per write"
    )
    rows = []
    for preset in ("fast", "paper", "authors"):
        cfg = load_config(preset, overrides=[f"model.width={width}"])
        variant, notes = _variant_for(cfg, device, variants)
        eval_s = _eval_seconds_per_image(cfg, data, indices, device, width)
        print(f"  {preset}: evaluation {1 / eval_s:,.0f} images/s (batch {cfg.train.eval_batch_size})")
        for note in notes:
            print(f"  {preset}: {note}")
        rate = rates[variant["name"]]
        hours = _projected_hours(cfg, rate, Overheads(eval_s, last_s, best_s))
        rows.append({"preset": preset, "variant": variant["name"], "images/s": f"{rate:,.0f}",
                     **{f"{part} h": _hours(h) for part, h in hours.items()},
                     "total h": _hours(sum(hours.values()))})  # fmt: skip
    print(tabulate(rows, headers="keys", tablefmt="github"))


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def bench_train(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    width = args.width or (1.0 if device.type == "cuda" else 0.25)
    torch.set_num_threads(args.workers)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = load_data(args.data, args.data_dir, True)
    indices = _train_indices(data, args.subset)
    variants = [
        {"name": "baseline: torch DataLoader + PIL, fp32", "loader": "torch"},
        {"name": "memory", "loader": "memory"},
        {"name": "memory + channels_last", "loader": "memory", "channels_last": True},
        {"name": "memory + bf16", "loader": "memory", "bf16": True},
        {"name": "memory + channels_last + bf16", "loader": "memory", "channels_last": True, "bf16": True},
    ]
    if args.compile:
        variants.append({"name": "memory + compile", "loader": "memory", "compile": True})
    if _installed("ffcv"):
        variants.append({"name": "ffcv", "loader": "ffcv"})
    variants += [{"name": f"memory, fused K={k}", "loader": "memory", "fuse": k} for k in args.fuse]
    # a training step costs about 3 forward passes (backward: gradients of inputs and of weights)
    gflop = 6 * _macs(UnilateralNet(build_backbone("resnet9", width), data.num_fine, data.num_coarse)) / 1e9
    print(f"{data.name}: ResNet-9 width {width} ({count_parameters(build_backbone('resnet9', width)):,} "
          f"backbone parameters, {gflop:.2f} GFLOP per image forward + backward), batch {args.batch_size} "
          f"per model, Adam, device {device}; {args.warmup} warm-up steps, then {args.rounds} rounds of "
          f"{args.steps} timed steps of every variant in turn: the median, and spread = (max - min) / "
          "median")  # fmt: skip
    runners: dict[str, TrainingSteps] = {}
    failures: dict[str, str] = {}  # a failing variant (compile, no compiler) loses its own row only
    for variant in variants:
        try:
            runners[variant["name"]] = TrainingSteps(variant, args, data, indices, device, width)
            print(f"  built and warmed up: {variant['name']}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported below; the other variants are still timed
            failures[variant["name"]] = _first_line(exc)
            print(f"  FAILED to build: {variant['name']}: {failures[variant['name']]}", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in runners}  # images/s of each round
    for n in range(1, args.rounds + 1):  # in turn, so that every variant meets the same moments
        for name, runner in list(runners.items()):
            try:
                rates[name].append(args.steps * runner.images_per_step / runner.time(args.steps))
            except Exception as exc:  # noqa: BLE001 - as above
                failures[name] = _first_line(exc)
                print(f"  FAILED in round {n}: {name}: {failures[name]}", flush=True)
                del runners[name], rates[name]
                continue
            print(f"  round {n}/{args.rounds}, {name}: {rates[name][-1]:,.0f} images/s", flush=True)
    baseline = variants[0]["name"]
    if baseline not in rates:
        print(f"the baseline failed, so no ratio can be given: {failures[baseline]}")
        return 1
    variants = [v for v in variants if v["name"] in rates]
    medians = [float(np.median(rates[v["name"]])) for v in variants]
    rows = [
        {
            "variant": variant["name"],
            "images/s": f"{rate:,.0f}",
            "ms/step": f"{1000 * runner.images_per_step / rate:.1f}",
            "vs baseline": f"{rate / medians[0]:.2f}x",
            "TFLOP/s": f"{rate * gflop / 1e3:.3g}",  # against the device's peak: how close (never 0.00)
            "spread": f"{100 * (max(rounds) - min(rounds)) / rate:.0f}%",
        }
        for variant, rate in zip(variants, medians, strict=True)
        for runner, rounds in [(runners[variant["name"]], rates[variant["name"]])]
    ]
    rows += [{"variant": name, "images/s": f"FAILED: {why}"} for name, why in failures.items()]
    print(tabulate(rows, headers="keys", tablefmt="github"))
    rates_by_name = {variant["name"]: rate for variant, rate in zip(variants, medians, strict=True)}
    _print_projections(rates_by_name, variants, data, indices, device, width)
    return 1 if failures else 0


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Environment variables for the processes started inside the block only."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def _packed_run(rank: int, args: argparse.Namespace, width: float, variant: dict, barrier, reports) -> None:
    """One packed process: the sequential run's step, its timed steps starting with its peers'.

    Reports (rank, (start, end)) on the monotonic clock, which is system-wide, or (rank, traceback).
    """
    torch.set_num_threads(args.workers)  # before any work: P processes of all threads each thrash
    try:
        device = resolve_device(args.device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        data = load_data(args.data, args.data_dir, True)
        start = 0.0

        def start_together() -> None:
            nonlocal start
            barrier.wait()
            start = time.monotonic()

        _train_rate(variant, args, data, _train_indices(data, args.subset), device, width, start_together)
        reports.put((rank, (start, time.monotonic())))
    except threading.BrokenBarrierError:
        pass  # a peer failed before the barrier and reports why
    except Exception:
        reports.put((rank, traceback.format_exc()))
        barrier.abort()  # peers waiting at the barrier stop instead of hanging


def _packed_rate(runs: int, threads: int, args: argparse.Namespace, width: float, variant: dict) -> float:
    """Aggregate images/s of `runs` concurrent processes: all their timed images over the window from
    their common start to the last one's end (a pack is done when its slowest run is)."""
    run_args = argparse.Namespace(**vars(args), workers=threads)
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot fork; a fresh torch reads OMP_NUM_THREADS
    barrier, reports = ctx.Barrier(runs), ctx.Queue()
    procs = [
        ctx.Process(target=_packed_run, args=(rank, run_args, width, variant, barrier, reports), daemon=True)
        for rank in range(runs)
    ]
    spans = {}
    try:
        with _environ(OMP_NUM_THREADS=str(threads)):  # read when the child imports torch
            for proc in procs:
                proc.start()
        while len(spans) < runs:
            try:
                rank, report = reports.get(timeout=1.0)
            except queue.Empty:
                codes = [proc.exitcode for proc in procs]
                if any(code not in (None, 0) for code in codes) or None not in codes:
                    raise RuntimeError(
                        f"packed processes exited without reporting (exit codes {codes})"
                    ) from None
                continue
            if isinstance(report, str):
                raise RuntimeError(f"packed run {rank} failed:\n{report}")
            spans[rank] = report
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # only after an error: on success every process has exited
            if proc.pid is not None:
                proc.join()
    start, end = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
    return runs * args.steps * args.batch_size / (end - start)


def bench_pack(args: argparse.Namespace) -> int:
    """Sequential, packed and fused P runs per width: whether the device has room for more than one."""
    device = resolve_device(args.device)
    runs = args.runs or (4 if device.type == "cuda" else os.cpu_count())
    widths = args.widths or ([0.25, 0.5, 1.0] if device.type == "cuda" else [0.125, 0.25, 0.5])
    threads = max(1, args.threads // runs)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = load_data(args.data, args.data_dir, True)
    indices = _train_indices(data, args.subset)
    solo_args = argparse.Namespace(**vars(args), workers=args.threads)
    single = {"loader": "memory", "bf16": args.bf16, "channels_last": args.channels_last}
    precision = "bf16" if args.bf16 else "fp32"
    print(
        f"{data.name}: {len(indices)} training images, P = {runs} ResNet-9 runs, batch {args.batch_size} "
        f"per run, Adam, memory loader, {precision}{', channels_last' if args.channels_last else ''}, "
        f"device {device}, {args.warmup} warm-up + {args.steps} timed steps, {os.cpu_count()} CPUs"
    )
    measure = {  # mode: images/s of all P runs at a width
        f"sequential (1 process x {args.threads} threads)": lambda width: _train_rate(
            single, solo_args, data, indices, device, width
        )[0],
        f"packed ({runs} processes x {threads} threads)": lambda width: _packed_rate(
            runs, threads, args, width, single
        ),
        f"fused (K={runs}, 1 process x {args.threads} threads)": lambda width: _train_rate(
            {**single, "fuse": runs}, solo_args, data, indices, device, width
        )[0],
    }
    rows, verdicts = [], []
    for width in widths:
        rates = {}
        for mode, rate_at in measure.items():
            if device.type == "cuda":
                torch.cuda.empty_cache()  # every mode, the packed processes above all, gets the whole memory
            rates[mode] = rate_at(width)
            print(f"  width {width}, {mode}: {rates[mode]:,.0f} images/s", flush=True)
        base = next(iter(rates.values()))  # sequential
        rows += [
            {"width": width, "mode": mode, "images/s": f"{rate:,.0f}", "vs sequential": f"{rate / base:.2f}x"}
            for mode, rate in rates.items()
        ]
        best = max(rates, key=rates.get)
        verdicts.append(
            f"  width {width}: fastest is {best.split(' (')[0]} ({rates[best] / base:.2f}x sequential)"
        )
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print("\n".join(verdicts))
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    loaders = sub.add_parser("loaders", help="images/s of each data loader, and ratios to torch's DataLoader")
    loaders.add_argument("--data", default="synthetic", help="dataset spec, as for launch/sweep.py")
    loaders.add_argument("--data-dir", default="data", help="dataset and .beton caches")
    loaders.add_argument("--loaders", default="torch,memory,ffcv", help="comma-separated subset")
    loaders.add_argument("--batch-size", type=int, default=256)
    loaders.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    loaders.add_argument("--workers", type=int, default=os.cpu_count())
    loaders.add_argument("--subset", type=int, help="stratified subset of the training images")
    loaders.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up epoch")
    loaders.set_defaults(run=bench_loaders)
    train = sub.add_parser("train", help="training images/s of each data path and fused K models, and ratios")
    train.add_argument("--data", default="synthetic", help="dataset spec, as for launch/sweep.py")
    train.add_argument("--data-dir", default="data", help="dataset and .beton caches")
    train.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    train.add_argument("--width", type=float, help="ResNet-9 width (default 0.25 on CPU, 1 on GPU)")
    train.add_argument("--batch-size", type=int, default=256, help="per model")
    train.add_argument("--workers", type=int, default=os.cpu_count(), help="loader workers / torch threads")
    train.add_argument("--subset", type=int, help="stratified subset of the training images")
    train.add_argument("--warmup", type=int, default=3, help="untimed steps first (JIT, autotuning)")
    train.add_argument("--steps", type=int, default=10, help="timed steps of one round")
    train.add_argument(
        "--rounds", type=int, default=3, help="rounds of timing every variant in turn; the median counts"
    )
    train.add_argument(
        "--fuse",
        type=lambda t: [int(k) for k in t.split(",")],
        default=[1, 4, 10],
        help="K values for fused training (comma-separated)",
    )
    train.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    train.set_defaults(run=bench_train)
    pack = sub.add_parser("pack", help="aggregate images/s of P runs: sequential, packed processes, fused")
    pack.add_argument("--data", default="synthetic", help="dataset spec, as for launch/sweep.py")
    pack.add_argument("--data-dir", default="data", help="dataset and .beton caches")
    pack.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    pack.add_argument(
        "--widths",
        type=lambda t: [float(w) for w in t.split(",")],
        help="ResNet-9 widths, comma-separated (default 0.125,0.25,0.5 on CPU; 0.25,0.5,1 on GPU)",
    )
    pack.add_argument(
        "--runs", type=int, help="P, runs packed on the device (default: the CPUs on CPU, 4 on GPU)"
    )
    pack.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads: all for sequential and fused, threads/P (at least 1) for each packed process",
    )
    pack.add_argument("--batch-size", type=int, default=256, help="per run")
    pack.add_argument("--subset", type=int, default=2000, help="stratified subset of the training images")
    pack.add_argument("--warmup", type=int, default=2, help="untimed steps first (JIT, autotuning)")
    pack.add_argument("--steps", type=int, default=8, help="timed steps")
    pack.add_argument("--bf16", action="store_true", help="bf16 autocast in every mode")
    pack.add_argument("--channels-last", action="store_true", help="channels_last in every mode")
    pack.set_defaults(run=bench_pack)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
