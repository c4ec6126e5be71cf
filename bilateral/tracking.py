"""Live tracking: every run writes TensorBoard event files into its own directory as it trains, so

    tensorboard --logdir results/<sweep>

shows every run of a sweep, named runs/<run_id>, whichever backend trained it. Per epoch: the
training loss, the learning rate, images/s and every validation metric; at the end, the run's
settings as hparams beside its best validation score. Only rank 0 of a DDP run writes; a resumed
run drops the events past the checkpoint it resumed from, so the curves hold each epoch once.

Where a lab uses them, the same goes to MLflow (`train.mlflow=<tracking URI>`, one experiment per
sweep, one MLflow run per run, resumed runs log into the same one) and to Weights & Biases
(`train.wandb=offline|online`, one project per sweep; offline runs sit in the run directory until
`wandb sync`). Both are off by default and change no run id.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from pathlib import Path

from bilateral.extras import require
from bilateral.plan import RunSpec
from bilateral.store import write_atomic

log = logging.getLogger(__name__)
SCALARS = {"train_loss": "train/loss", "lr": "train/lr", "images_per_s": "speed/images_per_s"}


@functools.cache
def unavailable() -> str | None:
    """None when TensorBoard events can be written; otherwise why not, warned once per process and
    kept in each run's record (`tracking`), so a missing tensorboard never goes unnoticed."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as exc:
        why = f"no TensorBoard events: {exc}. Fix: pip install tensorboard"
        log.warning("%s", why)
        return why
    return None


def tag_of(key: str) -> str | None:
    """The tag of a metrics row's key (None: not a scalar to plot)."""
    if key in SCALARS:
        return SCALARS[key]
    return f"val/{key.removeprefix('val_')}" if key.startswith("val_") else None


def scalars(row: dict) -> dict[str, float]:
    return {tag: float(value) for key, value in row.items() if (tag := tag_of(key)) is not None}


def hparams(spec: RunSpec) -> dict[str, str | int | float | bool]:
    """The run's settings, flattened to what TensorBoard's hparams plugin (and MLflow, W&B) take."""
    flat: dict[str, str | int | float | bool] = {
        "kind": spec.kind,
        "row": spec.model_name,
        "backbone": spec.backbone_name,
        "seed": spec.seed,
    }
    for section in ("data", "model", "optim", "train"):
        for key, value in spec.to_dict()[section].items():
            flat[f"{section}.{key}"] = value if isinstance(value, str | int | float | bool) else str(value)
    return flat


class _TensorBoard:
    def __init__(self, run_dir: Path, spec: RunSpec, start_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.spec = spec
        purge = start_epoch + 1 if start_epoch else None  # a resume redoes epochs after its checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)

    def epoch(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, best_score: float) -> None:
        self.writer.add_hparams(hparams(self.spec), {"hparam/best_val_score": best_score}, run_name=".")
        self.writer.close()


class _MLflow:
    """One MLflow run per run, in the sweep's experiment; its id is kept in the run directory so a
    resumed run logs into the same one."""

    def __init__(self, run_dir: Path, spec: RunSpec, uri: str):
        require("mlflow", "train.mlflow (MLflow tracking)")
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        sweep = run_dir.parent.parent.name
        experiment = self.client.get_experiment_by_name(sweep)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(sweep)
            except MlflowException:  # another run of the sweep made it first
                experiment_id = self.client.get_experiment_by_name(sweep).experiment_id
        else:
            experiment_id = experiment.experiment_id
        id_file = run_dir / "mlflow_run_id.txt"
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            return
        run = self.client.create_run(
            experiment_id, run_name=spec.run_id, tags={"bilateral.run_id": spec.run_id}
        )
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in hparams(spec).items()])
        write_atomic(id_file, self.run_id.encode())

    def epoch(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(tag, v, now, step) for tag, v in values.items()])

    def finish(self, best_score: float) -> None:
        self.client.log_metric(self.run_id, "best_val_score", best_score)
        self.client.set_terminated(self.run_id)


class _Wandb:
    """One W&B run per run, in a project named after the sweep; its files in the run directory."""

    def __init__(self, run_dir: Path, spec: RunSpec, mode: str):
        wandb = require("wandb", "train.wandb (Weights & Biases tracking)")
        sweep = run_dir.parent.parent.name
        stable_id = hashlib.sha256(f"{sweep}/{spec.run_id}".encode()).hexdigest()[:16]  # W&B's id alphabet
        self.run = wandb.init(
            mode=mode,
            dir=str(run_dir),
            project=sweep,
            name=spec.run_id,
            id=stable_id,
            resume="allow",
            config=hparams(spec),
            reinit="create_new",  # fused runs track several runs in one process
        )

    def epoch(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, best_score: float) -> None:
        self.run.summary["best_val_score"] = best_score
        self.run.finish()


class RunTracker:
    """Everything that tracks one run: TensorBoard always (when installed), MLflow and W&B when the
    run's train.mlflow / train.wandb ask for them. Epochs are logged 1-based, as the logs count them."""

    def __init__(self, run_dir: Path, spec: RunSpec, start_epoch: int):
        self.sinks: list[_TensorBoard | _MLflow | _Wandb] = []
        if unavailable() is None:
            self.sinks.append(_TensorBoard(run_dir, spec, start_epoch))
        if spec.train.mlflow:
            self.sinks.append(_MLflow(run_dir, spec, spec.train.mlflow))
        if spec.train.wandb:
            self.sinks.append(_Wandb(run_dir, spec, spec.train.wandb))

    def epoch(self, row: dict) -> None:
        values = scalars(row)
        for sink in self.sinks:
            sink.epoch(row["epoch"] + 1, values)

    def finish(self, best_score: float) -> None:
        for sink in self.sinks:
            sink.finish(best_score)


def trackers_of(spec: RunSpec) -> list[str]:
    """What the run's record says tracked it (or why TensorBoard did not)."""
    return [
        unavailable() or "tensorboard",
        *(["mlflow"] if spec.train.mlflow else []),
        *(["wandb"] if spec.train.wandb else []),
    ]
