"""What the evaluation reads from a finished sweep: every finished run of every model kind (the
summary's rows: hemispheres, bilateral nets, baselines, ensembles), its tested checkpoint in a
freshly built network, and a fixed subset of its own test images, the same for every model of a seed.

Ensembles are rebuilt from the members their record names. Heads a kind trained on other labels
(say, k-means clusters) are left out: their accuracy against the true labels means nothing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bilateral.analysis.context import AnalysisError
from bilateral.assemble import tested_model
from bilateral.data import HierarchicalDataset, normalize, stratified_subset
from bilateral.execution import resolve_device
from bilateral.kinds import kind_of
from bilateral.models import Ensemble
from bilateral.plan import RunSpec
from bilateral.run_data import run_data
from bilateral.store import RunStore, SweepStore

log = logging.getLogger(__name__)
HEADS = ("fine", "coarse")
EVAL_BATCH = 500


class EvaluationError(AnalysisError):
    """A part of the evaluation cannot run on this sweep; the message says why and what to do."""


@dataclass(frozen=True)
class Evaluated:
    """One finished run the evaluation reads: a row of summary.csv for one seed."""

    seed: int
    model: str  # the summary's row name
    run_id: str
    role: str  # left, right, bilateral, baseline, ensemble
    heads: tuple[str, ...]  # heads trained on the true labels, in HEADS order


@dataclass
class TestImages:
    """A seed's evaluation images: uint8 NHWC, their labels, and the position of each in the runs'
    test subset (predictions.npz order)."""

    raw: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray
    positions: np.ndarray

    def labels(self, head: str) -> np.ndarray:
        return self.fine if head == "fine" else self.coarse

    def key(self) -> str:
        """What identifies these exact images (for caches)."""
        return hashlib.sha256(np.ascontiguousarray(self.raw).tobytes()).hexdigest()[:16]


class EvalContext:
    """The finished runs of a sweep, by seed, with their models and evaluation images."""

    def __init__(
        self, root: str | Path, device: str = "auto", data_dir: str = "data", images: int | None = None
    ):
        self.store = SweepStore(root)
        self.root = self.store.root
        if not (self.root / "runs").is_dir():
            raise EvaluationError(
                f"{self.root} is not a sweep directory (no runs/ inside): give the directory that "
                "launch/sweep.py wrote, e.g. results/<sweep>"
            )
        self.device = resolve_device(device)
        self.data_dir = data_dir
        self.images = images or None
        self.notes: list[str] = []
        records, self.damaged = self.store.read_records()
        self.notes += [f"{run_id} left out: {why}" for run_id, why in self.damaged.items()]
        self._records = {r["run_id"]: r for r in records}
        runs = [e for r in records if (e := self._evaluated(r)) is not None]
        rows = Counter((e.seed, e.model) for e in runs)  # unilateral ResNet-18/34 share the row name
        self.runs = [
            replace(e, model=f"{e.model} / {self._records[e.run_id]['backbone']}")
            if rows[e.seed, e.model] > 1
            else e
            for e in runs
        ]
        self._models: dict[str, nn.Module] = {}

    def _evaluated(self, record: dict) -> Evaluated | None:
        if record.get("member", 0) != 0:  # pool members beyond the first are the ensembles' business
            return None
        spec = record["spec"]
        role = kind_of(spec["kind"], spec.get("plugin", "")).role
        heads = tuple(h for h in HEADS if f"test_acc_{h}" in record)
        if "test_acc_relabelled" in record:
            self.notes.append(
                f"{record['run_id']}: its coarse head learnt other labels; only its features count"
            )
        return Evaluated(record["seed"], record["model"], record["run_id"], role, heads)

    @property
    def seeds(self) -> list[int]:
        return sorted({e.seed for e in self.runs})

    def with_heads(self) -> list[Evaluated]:
        return [e for e in self.runs if e.heads]

    def independent_labels(self) -> bool:
        """True for data whose fine and coarse labels are independent (navon), not a hierarchy."""
        return bool(self.runs) and not self.data(self.runs[0].run_id).hierarchical

    def record(self, run_id: str) -> dict:
        return self._records[run_id]

    def finished(self, run_id: str) -> dict | None:
        """The record of a finished run, or None."""
        return self._records.get(run_id)

    def spec(self, run_id: str) -> RunSpec:
        return RunSpec.from_dict(self.record(run_id)["spec"])

    # -------------------------------------------------------------------------------------- data
    def data(self, run_id: str) -> HierarchicalDataset:
        """The data the run was trained and tested on (checked by its fingerprint)."""
        data = run_data(self.spec(run_id).data, self.data_dir)
        expected = self.record(run_id)["data_fingerprint"]
        if data.fingerprint() != expected:
            raise EvaluationError(
                f"the data under {self.data_dir} (fingerprint {data.fingerprint()}) is not the data "
                f"{run_id} was trained on ({expected}): point --data-dir at the cache the sweep used"
            )
        return data

    @functools.cache  # noqa: B019 - one context per evaluation
    def test_index(self, run_id: str) -> np.ndarray:
        run = self.store.run(run_id)
        if not run.path("predictions.npz").is_file():
            raise EvaluationError(
                f"{run_id} has no predictions.npz (trained by an older version): delete {run.root} and "
                "rerun the sweep to retrain it"
            )
        return run.load_arrays("predictions.npz")["test_index"]

    @functools.cache  # noqa: B019
    def test_images(self, seed: int) -> TestImages:
        """The seed's test subset, cut to --images (stratified by fine label, fixed): every model of the
        seed sees the same images."""
        runs = [e for e in self.with_heads() if e.seed == seed]  # the runs that were tested
        index = self.test_index(runs[0].run_id)
        for e in runs[1:]:
            if not np.array_equal(index, self.test_index(e.run_id)):
                raise EvaluationError(
                    f"{runs[0].run_id} and {e.run_id} were tested on different test subsets: they come "
                    "from different data configs; evaluate them in separate sweeps"
                )
        data = self.data(runs[0].run_id)
        positions = np.arange(len(index))
        if self.images and self.images < len(index):
            positions = stratified_subset(data.test.fine[index], self.images, seed=0)
        chosen = index[positions]
        return TestImages(
            data.test.images[chosen], data.test.fine[chosen], data.test.coarse[chosen], positions
        )

    def normalised(self, run_id: str, raw: np.ndarray) -> torch.Tensor:
        """uint8 NHWC images -> the normalised NCHW float batch the run's network takes, on the device."""
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in self.data(run_id).mean_std())
        return normalize(torch.from_numpy(raw).permute(0, 3, 1, 2), mean, std).contiguous().to(self.device)

    def mean_std(self, run_id: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.data(run_id).mean_std()

    # ------------------------------------------------------------------------------------ models
    def model(self, run_id: str) -> nn.Module:
        """The network the run was tested with, on the device, in eval mode (ensembles: their members)."""
        if run_id not in self._models:
            record = self.record(run_id)
            if "members" in record:
                model: nn.Module = Ensemble([self._trained(m) for m in record["members"]])
            else:
                model = self._trained(run_id)
            self._models[run_id] = model.to(self.device).eval()
        return self._models[run_id]

    def _trained(self, run_id: str) -> nn.Module:
        run: RunStore = self.store.run(run_id)
        if run_id not in self._records:
            raise EvaluationError(
                f"{run_id} has not finished (or its record is damaged), and an ensemble of this sweep is "
                "made of it: rerun the sweep to finish it"
            )
        data = self.data(run_id)
        return tested_model(run, self._records[run_id], data.num_fine, data.num_coarse)


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, heads: tuple[str, ...]) -> dict[str, np.ndarray]:
    """fp32 logits of each head for a normalised batch, computed in chunks (models are in eval mode)."""
    out: dict[str, list[torch.Tensor]] = {h: [] for h in heads}
    for start in range(0, len(x), EVAL_BATCH):
        z = model(x[start : start + EVAL_BATCH])
        for h in heads:
            out[h].append(z[h].float().cpu())
    return {h: torch.cat(v).numpy() for h, v in out.items()}


def accuracy(z: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(z.argmax(1) == labels))
