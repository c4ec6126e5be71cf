"""What the analysis reads from a finished sweep: per seed, the hemisphere and bilateral runs, their
best checkpoints, their saved test predictions, and test-set features computed on the same test
subset and with the same normalisation as the runs themselves.

Models and features are loaded once and cached, so the parts of the analysis share them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bilateral.assemble import tested_model
from bilateral.data import DeviceLoader, HierarchicalDataset, LoaderOptions, normalize
from bilateral.errors import BilateralError, DamagedFileError
from bilateral.execution import resolve_device
from bilateral.kinds import kind_of, with_role
from bilateral.plan import RunSpec
from bilateral.run_data import run_data
from bilateral.store import RunStore, SweepStore

log = logging.getLogger(__name__)

# The kinds the analysis reads, by their role (bilateral/kinds): the hemispheres alone, and the
# bilateral nets built from them (specialised) or trained end to end (unspecialised).
LEFT, RIGHT = with_role("left")[0].name, with_role("right")[0].name
SPECIALISED = next(k.name for k in with_role("bilateral") if k.from_hemispheres)
UNSPECIALISED = next(k.name for k in with_role("bilateral") if not k.from_hemispheres)
BILATERAL = (SPECIALISED, UNSPECIALISED)
KINDS = (LEFT, RIGHT, *BILATERAL)


def _analysed(spec: dict) -> bool:
    """Runs of the hemispheres and of every bilateral row are what the analysis reads."""
    return "kind" in spec and kind_of(spec["kind"], spec.get("plugin", "")).role in (
        "left",
        "right",
        "bilateral",
    )


def _spec_or_empty(run: RunStore) -> dict:
    try:
        return run.read_spec()
    except DamagedFileError:
        return {}


class AnalysisError(BilateralError):
    """A part of the analysis cannot run on this sweep; the message says what is missing and how to get it."""


def missing_message(part: str, kinds: list[str], root: Path) -> str:
    needs = ", ".join(kinds)
    how = "; ".join(f"{k}: `python launch/sweep.py {kind_of(k).how_to_get}`" for k in kinds)
    return (
        f"{part} needs finished {needs} run(s) of the same seed, and {root} has none. "
        f"Train them into this sweep (same --out/--name, preset and data) with {how}; "
        "then rerun the analysis."
    )


@dataclass
class Check:
    """A consistency check the report lists (e.g. recomputed predictions agree with the saved ones)."""

    what: str
    value: float
    ok: bool


class SweepContext:
    """The finished runs of a sweep that the analysis uses, grouped by seed and kind."""

    def __init__(self, root: str | Path, device: str = "auto", data_dir: str = "data") -> None:
        self.store = SweepStore(root)
        self.root = self.store.root
        if not (self.root / "runs").is_dir():
            raise AnalysisError(
                f"{self.root} is not a sweep directory (no runs/ inside): give the directory that "
                "launch/sweep.py wrote, e.g. results/<sweep>"
            )
        self.device = resolve_device(device)
        self.data_dir = data_dir
        self.checks: list[Check] = []
        self.notes: list[str] = []
        self.seeds: dict[int, dict[str, RunStore]] = {}
        self._models: dict[str, nn.Module] = {}
        self._features: dict[str, dict[str, np.ndarray]] = {}
        self._find_runs()

    # ----------------------------------------------------------------------------- which runs
    def _find_runs(self) -> None:
        records, self.damaged = self.store.read_records()
        records = [r for r in records if _analysed(r["spec"]) and r.get("member", 0) == 0]
        self.notes += [f"{run_id} left out: {why}" for run_id, why in self.damaged.items()]
        # navon-like data: two independent labels, no fine -> coarse map (bilateral.data.hierarchy)
        self.independent_labels = any(r.get("labels") == "independent" for r in records)
        if self.independent_labels:
            self.notes.append(
                "the fine and coarse labels are independent (e.g. navon: the local and the global "
                "digit), not a hierarchy: coarse-from-fine accuracy does not apply and is not computed; "
                "the scenarios, Grad-CAM and attribution apply as they are; similarity pairs share the "
                "fine label only, their coarse labels are as often different as for random pairs"
            )
        by_id = {r["run_id"]: r for r in records}
        rows = {
            r["model"] for r in records if kind_of(r["kind"], r["spec"].get("plugin", "")).role == "bilateral"
        }
        # every bilateral row of the sweep (callosal variants too): the paper's two first
        self.bilateral_rows = [*[k for k in BILATERAL if k in rows], *sorted(rows - set(BILATERAL))]
        for record in sorted(records, key=lambda r: r["run_id"]):
            seed = record["seed"]
            kind = record["model"] if record["model"] in rows else record["kind"]  # hemispheres by kind
            chosen = self.seeds.setdefault(seed, {})
            if kind in chosen:
                self.notes.append(
                    f"seed {seed} has several finished {kind} runs; using {chosen[kind].run_id}, "
                    f"ignoring {record['run_id']}"
                )
                continue
            chosen[kind] = self.store.run(record["run_id"])
        # the hemispheres a specialised net was built from take precedence over other hemisphere runs
        for runs in self.seeds.values():
            if SPECIALISED in runs:
                for dep in runs[SPECIALISED].read_record()["spec"]["depends_on"]:
                    if dep in by_id:
                        runs[by_id[dep]["kind"]] = self.store.run(dep)
        unfinished = sorted(
            p.parent.name
            for p in (self.root / "runs").glob("*/spec.json")
            if not (p.parent / "record.json").exists()
            and _analysed(_spec_or_empty(self.store.run(p.parent.name)))
        )
        if unfinished:
            self.notes.append(
                f"unfinished runs ignored (rerun the sweep to finish them): {', '.join(unfinished)}"
            )

    def seeds_with(self, *kinds: str) -> list[int]:
        return sorted(s for s, runs in self.seeds.items() if all(k in runs for k in kinds))

    def require(self, part: str, *kinds: str) -> list[int]:
        """Seeds that have every kind; AnalysisError naming what to train if none has."""
        seeds = self.seeds_with(*kinds)
        if not seeds:
            raise AnalysisError(missing_message(part, list(kinds), self.root))
        return seeds

    def bilateral_kind(self, seed: int, prefer: str = SPECIALISED) -> str | None:
        """The bilateral run of a seed to use: `prefer` if finished, else the other one, else None."""
        runs = self.seeds.get(seed, {})
        for kind in (prefer, *[k for k in BILATERAL if k != prefer]):
            if kind in runs:
                return kind
        return None

    def run(self, seed: int, kind: str) -> RunStore:
        return self.seeds[seed][kind]

    @functools.cache  # noqa: B019 - one context per analysis; records are small
    def record(self, run_id: str) -> dict:
        return self.store.run(run_id).read_record()

    def spec(self, run: RunStore) -> RunSpec:
        return RunSpec.from_dict(self.record(run.run_id)["spec"])

    # ------------------------------------------------------------------------------- predictions
    @functools.cache  # noqa: B019
    def predictions(self, run_id: str) -> dict[str, np.ndarray]:
        run = self.store.run(run_id)
        if not run.path("predictions.npz").is_file():
            raise AnalysisError(
                f"{run_id} has no predictions.npz (it was trained by an older version): delete "
                f"{run.root} and rerun the sweep to retrain it"
            )
        return run.load_arrays("predictions.npz")

    def test_index(self, seed: int) -> np.ndarray:
        """The test subset shared by every run of the seed (checked: all runs saved the same one)."""
        runs = list(self.seeds[seed].values())
        index = self.predictions(runs[0].run_id)["test_index"]
        for run in runs[1:]:
            other = self.predictions(run.run_id)["test_index"]
            if not np.array_equal(index, other):
                raise AnalysisError(
                    f"{runs[0].run_id} and {run.run_id} were tested on different test subsets: "
                    "they come from different data configs; analyse them in separate sweeps"
                )
        return index

    # -------------------------------------------------------------------------------------- data
    def data(self, run: RunStore) -> HierarchicalDataset:
        spec = self.spec(run)
        data = run_data(spec.data, self.data_dir)
        expected = self.record(run.run_id)["data_fingerprint"]
        if data.fingerprint() != expected:
            raise AnalysisError(
                f"the data {spec.data.source!r} under {self.data_dir} (fingerprint {data.fingerprint()}) "
                f"is not the data {run.run_id} was trained on ({expected}): point --data-dir at the "
                "cache the sweep used"
            )
        return data

    def test_loader(self, run: RunStore, batch_size: int | None = None) -> DeviceLoader:
        """The run's own test subset, in predictions.npz order, normalised as in training."""
        data = self.data(run)
        mean, std = data.mean_std()
        spec = self.spec(run)
        opts = LoaderOptions(batch_size or spec.train.eval_batch_size, self.device, mean, std, train=False)
        return DeviceLoader(data.test, self.predictions(run.run_id)["test_index"], opts)

    def test_images(self, run: RunStore, positions: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(normalised input batch, uint8 HWC images) of the given positions in the test subset."""
        data = self.data(run)
        index = self.predictions(run.run_id)["test_index"][positions]
        raw = data.test.images[index]
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in data.mean_std())
        x = normalize(torch.from_numpy(raw).permute(0, 3, 1, 2), mean, std)
        return x.contiguous().to(self.device), raw

    # ------------------------------------------------------------------------------------ models
    def model(self, run: RunStore) -> nn.Module:
        """The checkpoint the run was tested with (train.test_checkpoint) in a freshly built network,
        on the device, in eval mode."""
        if run.run_id not in self._models:
            data = self.data(run)
            model = tested_model(run, self.record(run.run_id), data.num_fine, data.num_coarse)
            model.to(self.device).eval()
            self._models[run.run_id] = model
        return self._models[run.run_id]

    @torch.no_grad()
    def features(self, run: RunStore) -> dict[str, np.ndarray]:
        """Penultimate features of the test subset: {"all"} and, for a bilateral net, {"left", "right"}.

        Also recomputes the heads' predictions and checks them against predictions.npz.
        """
        if run.run_id in self._features:
            return self._features[run.run_id]
        model = self.model(run)
        parts: dict[str, list[torch.Tensor]] = {"all": []}
        logits: dict[str, list[torch.Tensor]] = {h: [] for h in model.heads}
        for x, _, _ in self.test_loader(run):
            z = model.features(x)
            parts["all"].append(z.cpu())
            for h, head in model.heads.items():
                logits[h].append(head(z).cpu())
        out = {k: torch.cat(v).numpy() for k, v in parts.items()}
        if hasattr(model, "left"):
            split = model.left.out_dim
            out["left"], out["right"] = out["all"][:, :split], out["all"][:, split:]
        saved = self.predictions(run.run_id)
        for h, z in logits.items():
            agree = float(np.mean(torch.cat(z).argmax(1).numpy() == saved[f"logits_{h}"].argmax(1)))
            self.checks.append(
                Check(f"{run.run_id}: recomputed {h} predictions = saved ones", agree, agree >= 0.99)
            )
            if agree < 0.99:
                log.warning("%s: only %.4f of recomputed %s predictions match", run.run_id, agree, h)
        self._features[run.run_id] = out
        return out
