"""run(spec, store) -> record: the one function every backend executes.

Skip what is finished, fail together under DDP, write the spec, prepare the run's device and data,
then train it (bilateral.training.trainer) or let its kind assemble it (ensembles), and finish it
(bilateral.training.record)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from bilateral.data.beton import prepare_betons, split_parts
from bilateral.data.loaders import Loader, make_loader
from bilateral.data.memory_loader import LoaderOptions
from bilateral.distributed import fail_together, from_rank0, rank_and_world
from bilateral.errors import ConfigError
from bilateral.execution import choose_precision, resolve_device, tf32_state
from bilateral.placement import Placement
from bilateral.plan import RunSpec, group_name
from bilateral.run_data import check_batches, make_splits, run_data
from bilateral.store import SweepStore
from bilateral.tracking import trackers_of
from bilateral.training.record import finish_run
from bilateral.training.trainer import Trainer

log = logging.getLogger(__name__)


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
        trained = Trainer(specs, store, data, trains, val, dev, on_epoch, precision).fit()
    else:
        trained = [spec.kind_spec.assemble(spec, store, data, dev)]  # e.g. an ensemble of finished runs
    fused_with = [s.run_id for s in specs] if len(specs) > 1 else []
    return [
        finish_run(
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
