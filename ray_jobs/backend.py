"""--cluster ray: each stage's runs become Ray Tune trials; a run with --workers-per-run N > 1 is a
Ray Train TorchTrainer (DDP) driven from its trial, as Ray Train V2 recommends.

Every trial calls the same bilateral.training.run() as the local backend and writes into the same
results/<sweep>/ store, which must be on storage every node sees (a shared filesystem) when the
cluster has several nodes. Failures: a trial or Train worker group that dies is restarted
(--max-failures) and its run resumes from results/<sweep>/runs/<id>/checkpoints/last.pt.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
from pathlib import Path

from bilateral.config import SweepConfig
from bilateral.errors import ConfigError
from bilateral.flags import ranged
from bilateral.interrupt import Interrupted
from bilateral.placement import Offer, Placement, place
from bilateral.plan import Plan, RunSpec, group_name
from bilateral.store import RunStore, SweepStore
from bilateral.sweep import fusion_groups, run_sweep
from ray_jobs.auth import connect_error
from ray_jobs.reach import check_ray_address

log = logging.getLogger(__name__)
DRIVER_CPU = 0.01  # a Tune trial that only drives a TorchTrainer (Tune refuses an empty request)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster to join (auto, or HOST:PORT); default: start one here")
    parser.add_argument(
        "--num-cpus", type=ranged(int, 1), help="logical CPUs of the Ray instance started here"
    )
    parser.add_argument(
        "--max-failures",
        type=ranged(int, -1),
        default=2,
        help="restarts of a failed run or worker group (-1: without limit)",
    )
    parser.add_argument(
        "--autoscale",
        action="store_true",
        help="the cluster's autoscaler starts GPU nodes when trials ask for them: place GPU runs though "
        "no GPU node is up yet (--device auto then means one GPU per run)",
    )


def _torch_threads(placement: Placement) -> None:
    import torch

    torch.set_num_threads(min(placement.threads, os.cpu_count() or 1))


def ray_offer(resources: dict, autoscale: bool = False) -> Offer:
    """What `ray.cluster_resources()` reports (the nodes up now), as bilateral.placement reads it."""
    fix = (
        "where an autoscaler starts GPU nodes on demand, ask for them: --gpus-per-run 1 --autoscale"
        if not autoscale
        else ""
    )
    return Offer(
        resources.get("GPU", 0.0),
        resources.get("CPU", 0.0),
        "the Ray cluster (its nodes up now)",
        cluster=True,
        autoscales=autoscale,
        no_gpu_fix=fix,
    )


def ray_placement(args: argparse.Namespace, cfg: SweepConfig, resources: dict) -> Placement:
    """Each run's device, GPUs and CPUs (--cpus-per-run is per DDP worker on Ray)."""
    cpus = None if args.cpus_per_run is None else args.cpus_per_run * args.workers_per_run
    offer = ray_offer(resources, args.autoscale)
    return place(cfg.device, args.gpus_per_run, cpus, args.workers_per_run, offer, 1.0)


def trial_resources(placement: Placement) -> dict:
    """What one Tune trial (or each DDP worker) asks Ray for."""
    resources = {"CPU": placement.cpus_per_worker}
    if placement.gpus:
        resources["GPU"] = placement.gpus_per_worker
    return resources


def ddp_concurrency(cluster: dict, placement: Placement) -> int:
    """How many DDP runs fit the cluster at once (each a driving trial plus its workers), by every
    resource they ask for: a TorchTrainer whose workers cannot all be placed times out and retries
    forever. At least 1: an autoscaling cluster may have none of the GPUs yet."""
    fits = [cluster.get("CPU", 0.0) / (placement.cpus + DRIVER_CPU)]
    if placement.gpus:
        fits.append(cluster.get("GPU", 0.0) / placement.gpus)
    return max(1, math.floor(min(fits)))


def hide_gpus_unless_given(placement: Placement) -> None:
    """Ray leaves CUDA_VISIBLE_DEVICES alone for a task without GPUs: a CPU run must not see them."""
    if not placement.on_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _run_trial(trial: dict, settings: dict) -> None:
    """One Tune trial = one run (or --fuse K runs as one network) in this process, or one run as a
    TorchTrainer with N DDP workers."""
    from ray import tune

    from bilateral.training import run_group

    group = settings["groups"][trial["group"]]
    config = {**settings["common"], "spec": group[0]}  # a DDP trial's one run, for its workers
    placement: Placement = config["placement"]
    specs = [RunSpec.from_dict(d) for d in group]
    spec = specs[0]
    store = SweepStore(config["root"])
    if placement.workers == 1:
        hide_gpus_unless_given(placement)
        _torch_threads(placement)
        run_group(
            specs,
            store,
            placement.device,
            config["data_dir"],
            on_epoch=lambda row: tune.report(_progress(row)),
            placement=placement,
        )
        return

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=placement.workers,
            use_gpu=placement.on_gpu,
            resources_per_worker=trial_resources(placement),
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

    from bilateral.training import run

    placement: Placement = config["placement"]
    hide_gpus_unless_given(placement)
    _torch_threads(placement)
    spec = RunSpec.from_dict(config["spec"])
    device = str(ray.train.torch.get_device()) if placement.on_gpu else "cpu"
    run(
        spec,
        SweepStore(config["root"]),
        device,
        config["data_dir"],
        on_epoch=lambda row: ray.train.report(_progress(row)),
        placement=placement,
    )


def _progress(row: dict) -> dict:
    keep = ("epoch", "epochs", "train_loss", "val_score", "val_acc_fine", "val_acc_coarse", "images_per_s")
    return {k: row[k] for k in keep if k in row}


def _trial_name(trial) -> str:
    return trial.config["group"]


class TuneExecutor:
    """Runs one stage's specs as a grid of Tune trials and reports which failed."""

    def __init__(
        self,
        args: argparse.Namespace,
        cfg: SweepConfig,
        store: SweepStore,
        cluster: dict,
        placement: Placement,
    ):
        self.args, self.cfg, self.store = args, cfg, store
        self.cluster, self.placement = cluster, placement
        self.stage = 0

    def __call__(self, specs: list[RunSpec]) -> dict[str, str]:
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        args, placement = self.args, self.placement
        self.stage += 1
        workers = placement.workers
        common = {
            "root": str(self.store.root.resolve()),
            "data_dir": str(Path(self.cfg.data_dir).resolve()),
            "placement": placement,
            "max_failures": args.max_failures,
        }
        groups = {group_name(g): g for g in fusion_groups(specs, args.fuse, self.store)}
        settings = {
            "common": common,
            "groups": {name: [s.to_dict() for s in g] for name, g in groups.items()},
        }
        if workers == 1:
            resources = trial_resources(placement)
            concurrent = None
        else:  # the trial only drives its TorchTrainer; the workers hold the resources
            resources = {"CPU": DRIVER_CPU}
            concurrent = ddp_concurrency(self.cluster, placement)
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
                callbacks=[CSVLoggerCallback(), JsonLoggerCallback()],  # what Tune's own analysis reads
            ),
        )
        for spec in specs:
            self.store.run(spec.run_id).retire_error()  # an error.txt after fit() is then this stage's
        # no TensorBoard events of Tune's own: every run writes its own (bilateral/tracking.py), and
        # a second copy under results/<sweep>/ray would show each run twice in `tensorboard --logdir`
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        try:
            results = tuner.fit()
        except SystemError as exc:  # SIGTERM or Ctrl-C inside Ray's Cython wait arrives wrapped in this
            if isinstance(exc.__cause__, Interrupted):
                raise exc.__cause__ from None
            raise
        failed = {}
        for result in results:
            for spec in groups[result.config["group"]]:
                run_store = self.store.run(spec.run_id)
                if result.error is None and run_store.is_finished():
                    continue
                failed[spec.run_id] = _failure_text(run_store, result.error)
        return failed


def _failure_text(run_store: RunStore, error: BaseException | None) -> str:
    """The run's own error.txt, which only this stage can have written (retired at its start; a
    rank's traceback says more than Ray's summary of it); otherwise Ray's error, kept as error.txt."""
    error_file = run_store.path("error.txt")
    if error_file.is_file():
        own = error_file.read_text()
        return own if error is None else f"{own}\n(Ray: {type(error).__name__})\n"
    text = (
        f"{type(error).__name__}: {error}"
        if error is not None
        else "the Ray trial ended without finishing this run and reported no error"
    )
    run_store.write_error(text)
    return text


def connect(address: str | None, num_cpus: int | None) -> None:
    """ray.init on the cluster at address (checked first: ray.init retries an address where nothing
    listens for minutes), or on a new local one; workers import this repository."""
    import ray
    from ray.exceptions import AuthenticationError

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # token auth: Ray's default or the user's (auth.py)
    # a submitted job ships the repository as its working_dir; a driver started by hand points
    # workers at this checkout (the same path on every node)
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    repo = Path(__file__).resolve().parents[1]
    runtime_env = None if in_job else {"env_vars": {"PYTHONPATH": str(repo)}}
    if address:
        check_ray_address(address)
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except (ConnectionError, AuthenticationError) as exc:
            raise connect_error(address, exc) from None
    else:  # a new local cluster: Ray >= 2.60 turns token auth on (~/.ray/auth_token) unless told not to
        ray.init(num_cpus=num_cpus, runtime_env=runtime_env)


def run(args: argparse.Namespace, cfg: SweepConfig, plan: Plan, store: SweepStore) -> dict[str, str]:
    import ray

    if args.fuse > 1 and args.workers_per_run > 1:
        raise ConfigError(
            f"--fuse {args.fuse} and --workers-per-run {args.workers_per_run} do not combine: a fused group "
            "trains in one process; use one of them"
        )

    started_here = not ray.is_initialized()
    # Ctrl-C and SIGTERM stop the sweep at once, saying what it keeps (launch/sweep.py): not Tune's
    # graceful stop of the trials, nor ray.init's SIGTERM handler, which aborts the driver with a dump
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    driver_sigterm = signal.getsignal(signal.SIGTERM)
    if started_here:
        connect(args.address, args.num_cpus)
        if callable(driver_sigterm):
            signal.signal(signal.SIGTERM, driver_sigterm)
    try:
        resources = ray.cluster_resources()
        placement = ray_placement(args, cfg, resources)
        log.info(
            "Ray cluster: %s CPUs, %s GPUs; each run: %s, %g GPU(s), %g CPU(s), %d worker(s)",
            resources.get("CPU", 0),
            resources.get("GPU", 0),
            placement.device,
            placement.gpus,
            placement.cpus,
            placement.workers,
        )
        if placement.note:
            log.warning("%s", placement.note)
        executor = TuneExecutor(args, cfg, store, resources, placement)
        return run_sweep(plan, store, executor)
    finally:
        if started_here:
            ray.shutdown()
