"""Live tracking: every run writes TensorBoard event files into its own directory as it trains, so

    tensorboard --logdir results/<sweep>

shows every run of a sweep, named runs/<run_id>, whichever backend trained it. Per epoch: the
training loss, the learning rate, images/s and every validation metric; at the end, the run's
settings as hparams beside its best validation score. Only rank 0 of a DDP run writes; a resumed
run drops the events past the checkpoint it resumed from, so the curves hold each epoch once.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from bilateral.experiment import RunSpec

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
    """The TensorBoard tag of a metrics row's key (None: not a scalar to plot)."""
    if key in SCALARS:
        return SCALARS[key]
    return f"val/{key.removeprefix('val_')}" if key.startswith("val_") else None


def hparams(spec: RunSpec) -> dict[str, str | int | float | bool]:
    """The run's settings, flattened to what TensorBoard's hparams plugin takes."""
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


class RunTracker:
    """One run's TensorBoard writer; epochs are logged 1-based, as the logs count them."""

    def __init__(self, run_dir: Path, spec: RunSpec, start_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.spec = spec
        purge = start_epoch + 1 if start_epoch else None  # a resume redoes epochs after its checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)

    def epoch(self, row: dict) -> None:
        step = row["epoch"] + 1
        for key, value in row.items():
            tag = tag_of(key)
            if tag is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, best_score: float) -> None:
        self.writer.add_hparams(hparams(self.spec), {"hparam/best_val_score": best_score}, run_name=".")
        self.writer.close()
