"""--cluster ray: each stage's runs become Ray Tune trials; a run with --workers-per-run N > 1 is a
Ray Train TorchTrainer (DDP) driven from its trial, as Ray Train V2 recommends.

Every trial calls the same bilateral.train.run() as the local backend and writes into the same
results/<sweep>/ store, which must be on storage every node sees (a shared filesystem) when the
cluster has several nodes. Failures: a trial or Train worker group that dies is restarted
(--max-failures) and its run resumes from results/<sweep>/runs/<id>/checkpoints/last.pt.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path

from bilateral.config import SweepConfig
from bilateral.errors import ConfigError
from bilateral.experiment import Plan, RunSpec, group_name
from bilateral.store import SweepStore
from bilateral.sweep import fusion_groups, run_sweep

log = logging.getLogger(__name__)
DRIVER_CPU = 0.01  # a Tune trial that only drives a TorchTrainer (Tune refuses an empty request)


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """--gpus-per-run / --cpus-per-run, which --cluster ray and --cluster slurm share: both backends add
    their flags to launch/sweep.py's one parser, so the first to call this adds them, with default None,
    and each backend resolves its own default from None."""
    if "--gpus-per-run" in parser._option_string_actions:  # the other backend added them
        return
    parser.add_argument(
        "--gpus-per-run",
        type=float,
        help="Ray: GPU share per run, 0.25 packs 4 runs per GPU "
        "(default 0). Slurm: GPUs per run, N > 1 = DDP (default 1; 0 with --device cpu)",
    )
    parser.add_argument(
        "--cpus-per-run", type=float, help="CPUs per run (Ray: per DDP worker, default 1; Slurm: default 2)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster to join (auto, or HOST:PORT); default: start one here")
    parser.add_argument("--num-cpus", type=int, help="logical CPUs of the Ray instance started here")
    add_shared_arguments(parser)
    parser.add_argument("--workers-per-run", type=int, default=1, help="N > 1: DDP over N Ray Train workers")
    parser.add_argument(
        "--max-failures", type=int, default=2, help="restarts of a failed run or worker group"
    )


def _torch_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, min(int(cpus), os.cpu_count() or 1)))


def _run_trial(trial: dict, settings: dict) -> None:
    """One Tune trial = one run (or --fuse K runs as one network) in this process, or one run as a
    TorchTrainer with N DDP workers."""
    from ray import tune

    from bilateral.train import run_group

    group = settings["groups"][trial["group"]]
    config = {**settings["common"], "spec": group[0]}  # a DDP trial's one run, for its workers
    specs = [RunSpec.from_dict(d) for d in group]
    spec = specs[0]
    store = SweepStore(config["root"])
    if config["workers"] == 1:
        _torch_threads(config["cpus"])
        run_group(
            specs,
            store,
            config["device"],
            config["data_dir"],
            on_epoch=lambda row: tune.report(_progress(row)),
        )
        return

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = config["gpus"] > 0
    resources = {"CPU": config["cpus"], **({"GPU": config["gpus"]} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=config["workers"], use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=f"{spec.run_id}-ddp",
            storage_path=str(Path(config["root"]) / "ray"),
            failure_config=FailureConfig(max_failures=config["max_failures"]),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def _train_worker(config: dict) -> None:
    """Each Ray Train worker: torch.distributed is set up by Ray; run() trains with DDP."""
    import ray.train
    import ray.train.torch

    from bilateral.train import run

    _torch_threads(config["cpus"])
    spec = RunSpec.from_dict(config["spec"])
    device = str(ray.train.torch.get_device()) if config["gpus"] > 0 else "cpu"
    run(
        spec,
        SweepStore(config["root"]),
        device,
        config["data_dir"],
        on_epoch=lambda row: ray.train.report(_progress(row)),
    )


def _progress(row: dict) -> dict:
    keep = ("epoch", "epochs", "train_loss", "val_score", "val_acc_fine", "val_acc_coarse", "images_per_s")
    return {k: row[k] for k in keep if k in row}


def _trial_name(trial) -> str:
    return trial.config["group"]


class TuneExecutor:
    """Runs one stage's specs as a grid of Tune trials and reports which failed."""

    def __init__(self, args: argparse.Namespace, cfg: SweepConfig, store: SweepStore, cluster_cpus: float):
        self.args, self.cfg, self.store = args, cfg, store
        self.cluster_cpus = cluster_cpus
        self.stage = 0

    def __call__(self, specs: list[RunSpec]) -> dict[str, str]:
        from ray import tune

        args = self.args
        self.stage += 1
        workers = args.workers_per_run
        gpus = args.gpus_per_run or 0.0
        cpus = 1.0 if args.cpus_per_run is None else args.cpus_per_run
        common = {
            "root": str(self.store.root.resolve()),
            "device": self.cfg.device,
            "data_dir": str(Path(self.cfg.data_dir).resolve()),
            "workers": workers,
            "cpus": cpus,
            "gpus": gpus,
            "max_failures": args.max_failures,
        }
        groups = {group_name(g): g for g in fusion_groups(specs, args.fuse, self.store)}
        settings = {
            "common": common,
            "groups": {name: [s.to_dict() for s in g] for name, g in groups.items()},
        }
        if workers == 1:
            resources = {"CPU": cpus, "GPU": gpus}
            concurrent = None
        else:  # the trial only drives its TorchTrainer; the workers hold the resources
            resources = {"CPU": DRIVER_CPU}
            concurrent = max(1, math.floor(self.cluster_cpus / (workers * cpus + DRIVER_CPU)))
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_run_trial, settings=settings), resources),
            param_space={"group": tune.grid_search(list(groups))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrent,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"stage{self.stage}-{os.getpid()}",
                storage_path=str(self.store.root.resolve() / "ray"),
                failure_config=tune.FailureConfig(max_failures=args.max_failures if workers == 1 else 0),
                verbose=1,
            ),
        )
        results = tuner.fit()
        failed = {}
        for result in results:
            error = f"{type(result.error).__name__}: {result.error}"
            for spec in groups[result.config["group"]]:
                run_store = self.store.run(spec.run_id)
                if result.error is not None or not run_store.is_finished():
                    failed[spec.run_id] = error
                    run_store.write_error(error)
        return failed


def run(args: argparse.Namespace, cfg: SweepConfig, plan: Plan, store: SweepStore) -> dict[str, str]:
    import ray

    if args.fuse > 1 and args.workers_per_run > 1:
        raise ConfigError(
            f"--fuse {args.fuse} and --workers-per-run {args.workers_per_run} do not combine: a fused group "
            "trains in one process; use one of them"
        )

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray >= 2.60 token auth; local clusters only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_here = not ray.is_initialized()
    if started_here:
        # Workers import this repository: a submitted job ships it as its working_dir; a driver
        # started by hand points workers at this checkout (the same path on every node).
        in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
        repo = Path(__file__).resolve().parents[1]
        runtime_env = None if in_job else {"env_vars": {"PYTHONPATH": str(repo), "RAY_AUTH_MODE": "disabled"}}
        if args.address:
            ray.init(address=args.address, runtime_env=runtime_env)
        else:
            ray.init(num_cpus=args.num_cpus, runtime_env=runtime_env)
    try:
        cpus = ray.cluster_resources().get("CPU", 0.0)
        log.info("Ray cluster: %s CPUs, %s GPUs", cpus, ray.cluster_resources().get("GPU", 0))
        return run_sweep(plan, store, TuneExecutor(args, cfg, store, cpus))
    finally:
        if started_here:
            ray.shutdown()
