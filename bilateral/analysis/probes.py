"""Linear probes: how well each hemisphere's features separate the fine and the coarse classes.

For every analysed run (hemispheres alone, bilateral nets, self-supervised and clustered
hemispheres), the frozen features of each hemisphere on the run's own validation images are fitted
by a logistic regression per label, scored by stratified 5-fold cross-validation on those images.
The test set plays no part; the true labels are used even where a hemisphere trained on others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bilateral.analysis.context import AnalysisError, SweepContext
from bilateral.analysis.report import Section, pm
from bilateral.data import DeviceLoader, HierarchicalDataset, LoaderOptions
from bilateral.probing import cross_validated_accuracy
from bilateral.run_data import make_splits
from bilateral.store import write_atomic

FOLDS = 5


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Cross-validated accuracy of a linear probe on the features (bilateral.probing)."""
    return cross_validated_accuracy(features, labels, seed, folds=FOLDS, max_iter=500)


@torch.no_grad()
def hemisphere_features(
    ctx: SweepContext, run, data: HierarchicalDataset
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """{hemisphere: validation features} with the true fine and coarse labels of those images."""
    model, spec = ctx.model(run), ctx.spec(run)
    val = make_splits(data, spec).val
    mean, std = data.mean_std()
    opts = LoaderOptions(spec.train.eval_batch_size, ctx.device, mean, std, train=False)
    parts: dict[str, list[torch.Tensor]] = {}
    for x, _, _ in DeviceLoader(data.train, val, opts):
        if hasattr(model, "left"):
            z = {"left": model.left_features(x), "right": model.right_features(x)}
        else:
            z = {spec.kind_spec.role: model.features(x)}
        for side, f in z.items():
            parts.setdefault(side, []).append(f.float().cpu())
    features = {side: torch.cat(v).flatten(1).numpy() for side, v in parts.items()}
    return features, data.train.fine[val], data.train.coarse[val]


def run(ctx: SweepContext, out: Path) -> Section:
    if not ctx.seeds:
        raise AnalysisError(
            "linear probes: the sweep has no finished hemisphere or bilateral run; train some first"
        )
    rows, classes = [], {}
    for seed, runs in sorted(ctx.seeds.items()):
        for model_name, store in runs.items():
            record, spec = ctx.record(store.run_id), ctx.spec(store)
            data = ctx.data(store)
            features, fine, coarse = hemisphere_features(ctx, store, data)
            classes = {"fine": data.num_fine, "coarse": data.num_coarse}
            for side, z in features.items():
                backbone = spec.right_backbone or spec.backbone if side == "right" else spec.backbone
                rows.append(
                    {
                        "seed": seed,
                        "model": model_name,
                        "hemisphere": side,
                        "backbone": backbone,
                        "probe_fine": probe_accuracy(z, fine, seed),
                        "probe_coarse": probe_accuracy(z, coarse, seed),
                        "test_acc_fine": record.get("test_acc_fine", np.nan),
                        "test_acc_coarse": record.get("test_acc_coarse", np.nan),
                        "run": store.run_id,
                    }
                )
    table = pd.DataFrame(rows)
    write_atomic(out / "probes.csv", table.to_csv(index=False).encode())
    section = Section("5. Linear probes of each hemisphere")
    section.add(
        f"A logistic regression on each hemisphere's frozen features of the validation images, "
        f"{FOLDS}-fold cross-validated, for the true fine and coarse labels (chance "
        f"{1 / classes['fine']:.3f} and {1 / classes['coarse']:.3f}). A hemisphere that learnt one "
        "label well but still separates the other carries general features; one that separates "
        "only its own is specialised. Test accuracies are the whole run's, for reference. Per seed: "
        "`probes.csv`.",
        "",
    )
    grouped = table.groupby(["model", "hemisphere", "backbone"], sort=False)
    summary = grouped.agg(
        seeds=("seed", "nunique"),
        pf=("probe_fine", "mean"),
        pf_sd=("probe_fine", "std"),
        pc=("probe_coarse", "mean"),
        pc_sd=("probe_coarse", "std"),
        tf=("test_acc_fine", "mean"),
        tf_sd=("test_acc_fine", "std"),
        tc=("test_acc_coarse", "mean"),
        tc_sd=("test_acc_coarse", "std"),
    ).reset_index()
    shown = summary[["model", "hemisphere", "backbone", "seeds"]].copy()
    for col, name in (
        ("pf", "probe fine"),
        ("pc", "probe coarse"),
        ("tf", "test fine"),
        ("tc", "test coarse"),
    ):
        shown[name] = [pm(m, s) for m, s in zip(summary[col], summary[f"{col}_sd"], strict=True)]
    section.table(shown, numparse=False)
    for value in ("probe_fine", "probe_coarse"):  # right minus left, within each net
        section.compare_seeds(table, value, ["model"], "hemisphere", "left")
    section.files.append(out / "probes.csv")
    return section
