"""Transfer to classes never trained on: does a general right hemisphere take on new classes faster?

A sweep trained with `data.holdout_per_coarse` >= 1 (experiments/transfer.yaml) never saw some fine
classes. For every finished run, the frozen features of each representation (a hemisphere, the left
and right halves and the whole of a bilateral net, a unilateral net, an ensemble's members side by
side) of the held-out classes' images are fitted
  - with a linear probe (logistic regression on standardised features) on the held-out classes'
    train images, scored on their test images;
  - with nearest-class-mean classifiers (cosine, L2-normalised features) from 1, 5 and 10 train
    images per held-out class, averaged over many draws, scored on the same test images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bilateral.analysis.report import Section, pm
from bilateral.data import stratified_subset
from bilateral.data.holdout import split_held_out
from bilateral.evaluation import figures
from bilateral.evaluation.context import EVAL_BATCH, EvalContext, Evaluated, EvaluationError
from bilateral.probing import held_out_accuracy
from bilateral.run_data import load_data
from bilateral.store import write_atomic

log = logging.getLogger(__name__)
SHOTS = (1, 5, 10)
DRAWS = 50
PROBE_TRAIN = 5000  # at most this many held-out train images fit the probe (stratified)


def nearest_class_mean(
    support: np.ndarray,
    support_labels: np.ndarray,
    query: np.ndarray,
    query_labels: np.ndarray,
    shots: int,
    draws: int,
    seed: int,
) -> tuple[float, float]:
    """Mean and std over draws of the accuracy of cosine nearest-class-mean from `shots` images a class."""
    rng = np.random.default_rng(seed)
    classes = np.unique(query_labels)
    s = support / np.linalg.norm(support, axis=1, keepdims=True).clip(1e-12)
    q = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
    accs = []
    for _ in range(draws):
        means = []
        for c in classes:
            members = np.flatnonzero(support_labels == c)
            if len(members) < shots:
                raise EvaluationError(
                    f"few-shot transfer: held-out class {c} has {len(members)} train images, fewer "
                    f"than {shots} shots"
                )
            means.append(s[rng.choice(members, shots, replace=False)].mean(0))
        predicted = classes[np.argmax(q @ np.stack(means).T, axis=1)]
        accs.append(np.mean(predicted == query_labels))
    return float(np.mean(accs)), float(np.std(accs))


@torch.no_grad()
def representations(ctx: EvalContext, ev: Evaluated, raw: np.ndarray) -> dict[str, np.ndarray]:
    """{representation: frozen features} of uint8 images for one run's net."""
    net = ctx.model(ev.run_id)
    x = ctx.normalised(ev.run_id, raw)
    members = getattr(net, "members", None)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(x), EVAL_BATCH):
        batch = x[start : start + EVAL_BATCH]
        z = torch.cat([m.features(batch) for m in members], 1) if members is not None else net.features(batch)
        z = z.float().flatten(1).cpu()
        found = {"all": z}
        left = getattr(net, "left", None)
        if left is not None and hasattr(left, "out_dim"):
            found["left"], found["right"] = z[:, : left.out_dim], z[:, left.out_dim :]
        for k, v in found.items():
            parts.setdefault(k, []).append(v)
    out = {k: torch.cat(v).numpy() for k, v in parts.items()}
    if ev.role in ("left", "right"):  # a hemisphere alone: its features are its side's
        out = {ev.role: out["all"]}
    return out


def run(ctx: EvalContext, out: Path) -> Section:
    if not ctx.runs:
        raise EvaluationError("transfer: the sweep has no finished run; train some first")
    spec = ctx.spec(ctx.runs[0].run_id)
    if spec.data.holdout_per_coarse < 1:
        raise EvaluationError(
            "transfer needs classes the nets never saw, and this sweep trained on every class: train a "
            "sweep with held-out classes, e.g. `python launch/sweep.py --experiment transfer` (or "
            "data.holdout_per_coarse=1), then evaluate that one"
        )
    source = load_data(spec.data.source, ctx.data_dir, spec.data.verify_md5)
    _, held = split_held_out(source, spec.data.holdout_per_coarse, spec.data.split_seed)
    assert held is not None
    support_index = stratified_subset(held.train.fine, PROBE_TRAIN, seed=0)
    query_index = np.arange(len(held.test))
    if ctx.images and ctx.images < len(query_index):
        query_index = stratified_subset(held.test.fine, ctx.images, seed=0)
    support_raw, support_y = held.train.images[support_index], held.train.fine[support_index]
    query_raw, query_y = held.test.images[query_index], held.test.fine[query_index]
    rows = []
    for i, ev in enumerate(ctx.runs, 1):
        log.info("transfer %d/%d: %s", i, len(ctx.runs), ev.run_id)
        support, query = representations(ctx, ev, support_raw), representations(ctx, ev, query_raw)
        for rep in support:
            base = dict(
                seed=ev.seed, model=ev.model, representation=rep, dim=support[rep].shape[1], run=ev.run_id
            )
            rows.append(
                {
                    **base,
                    "method": "linear probe",
                    "shots": len(support_y) // held.num_fine,
                    "acc": held_out_accuracy(support[rep], support_y, query[rep], query_y, max_iter=1000),
                    "draw_std": np.nan,
                }
            )
            for shots in SHOTS:
                acc, sd = nearest_class_mean(
                    support[rep], support_y, query[rep], query_y, shots, DRAWS, ev.seed
                )
                rows.append(
                    {**base, "method": "nearest class mean", "shots": shots, "acc": acc, "draw_std": sd}
                )
    table = pd.DataFrame(rows)
    write_atomic(out / "transfer.csv", table.to_csv(index=False).encode())
    section = Section("Transfer to held-out classes")
    section.add(
        f"{held.num_fine} fine classes ({', '.join(held.fine_names)}) were held out of every run's training, "
        f"validation, pool and test splits (data.holdout_per_coarse={spec.data.holdout_per_coarse}). On each "
        f"representation's frozen features: a linear probe fitted on {len(support_y)} of their train images, "
        f"and cosine nearest-class-mean classifiers from {', '.join(map(str, SHOTS))} train images per class "
        f"({DRAWS} draws each), all scored on {len(query_y)} of their test images (chance "
        f"{1 / held.num_fine:.3f}). Mean ± std over seeds; per seed: `transfer.csv`.",
        "",
    )
    table["column"] = [
        "probe" if m == "linear probe" else f"{s}-shot"
        for m, s in zip(table["method"], table["shots"], strict=True)
    ]
    summary = (
        table.groupby(["model", "representation", "column"], sort=False)["acc"]
        .agg(["mean", "std"])
        .reset_index()
    )
    summary["cell"] = [pm(m, s) for m, s in zip(summary["mean"], summary["std"], strict=True)]
    wide = summary.pivot(index=["model", "representation"], columns="column", values="cell").reset_index()
    columns = [f"{s}-shot" for s in SHOTS] + ["probe"]
    section.table(wide[["model", "representation", *columns]], numparse=False)
    # each representation of a net minus its left half (right − left, all − left), seed by seed
    section.compare_seeds(table, "acc", ["model", "column"], "representation", "left")
    section.figure(
        figures.transfer_curves(table, out / "figures" / "transfer.png"),
        "Held-out class accuracy against shots per class (nearest class mean), mean over seeds",
    )
    section.files.append(out / "transfer.csv")
    return section
