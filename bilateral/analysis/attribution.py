"""Head attribution: how much each bilateral head relies on each hemisphere (the paper's "weighted
attention", stated without code). Two measures per head, both split at the boundary between the
left and right halves of the concatenated features, both giving shares that sum to 1:

  weight_norm   ||W_left||_F / (||W_left||_F + ||W_right||_F) of the head's Linear weight W
                (independent of the data; blind to the scale of each half's features)
  grad_x_input  per test image, sum |d logit / d f_k * f_k| over each half's features f_k, for the
                head's predicted class, as a share of both halves; then the mean over images. For a
                linear head this is |W[c, k] * f_k|, the size of each feature's term in the logit.

The signed logit contribution of each half (sum of W[c, k] * f_k over the half) is reported too.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from bilateral.analysis import figures
from bilateral.analysis.context import SPECIALISED, SweepContext
from bilateral.analysis.report import Section, pm


def _linear(head: nn.Module) -> nn.Linear:
    return head if isinstance(head, nn.Linear) else head.linear


def weight_norm_share(head: nn.Module, split: int) -> tuple[float, float]:
    """(left, right) shares of the head's weight norm over the first `split` inputs and the rest."""
    w = _linear(head).weight.detach().double()
    left, right = torch.linalg.norm(w[:, :split]).item(), torch.linalg.norm(w[:, split:]).item()
    total = left + right
    return (left / total, right / total) if total > 0 else (np.nan, np.nan)


def grad_x_input(
    head: nn.Module, features: np.ndarray | torch.Tensor, split: int, target: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per image: left/right shares of |gradient x input| over the features, and the signed sums.

    target: class per image (default: the head's prediction). A float64 copy of the head runs in
    eval mode (no dropout).
    """
    head = copy.deepcopy(head).cpu().double().eval()  # float64 CPU copy, no dropout; model untouched
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64).requires_grad_(True)
    with torch.enable_grad():
        logits = head(f)
        target_t = logits.argmax(1) if target is None else torch.as_tensor(target, dtype=torch.long)
        (grad,) = torch.autograd.grad(logits.gather(1, target_t.view(-1, 1)).sum(), f)
    a = (grad * f).detach()
    mag_left, mag_right = a[:, :split].abs().sum(1), a[:, split:].abs().sum(1)
    total = mag_left + mag_right
    share_left = torch.where(total > 0, mag_left / total, torch.full_like(total, float("nan")))
    return {
        "left_share": share_left.numpy(),
        "right_share": (1 - share_left).numpy(),
        "left_contribution": a[:, :split].sum(1).numpy(),
        "right_contribution": a[:, split:].sum(1).numpy(),
        "target": target_t.numpy(),
    }


def head_attribution(model: nn.Module, features: np.ndarray) -> list[dict]:
    """Rows (head, method, left_share, right_share, ...) for every head of a bilateral net."""
    split = model.left.out_dim
    rows = []
    for name, head in model.heads.items():
        wl, wr = weight_norm_share(head, split)
        rows.append({"head": name, "method": "weight_norm", "left_share": wl, "right_share": wr})
        g = grad_x_input(head, features, split)
        rows.append(
            {
                "head": name,
                "method": "grad_x_input",
                "left_share": float(np.nanmean(g["left_share"])),
                "right_share": float(np.nanmean(g["right_share"])),
                "left_contribution": float(g["left_contribution"].mean()),
                "right_contribution": float(g["right_contribution"].mean()),
                "images": len(g["left_share"]),
            }
        )
    return rows


def run(ctx: SweepContext, out: Path) -> Section:
    kinds = [k for k in ctx.bilateral_rows if ctx.seeds_with(k)]
    if not kinds:
        ctx.require("head attribution", SPECIALISED)
    section = Section("4. Head attribution")
    rows = []
    for kind in kinds:
        for seed in ctx.seeds_with(kind):
            run_store = ctx.run(seed, kind)
            model = ctx.model(run_store)
            for row in head_attribution(model, ctx.features(run_store)["all"]):
                rows.append({"bilateral": kind, "seed": seed, "run_id": run_store.run_id, **row})
    df = pd.DataFrame(rows)
    df.to_csv(out / "attribution.csv", index=False)
    agg = (
        df.groupby(["bilateral", "head", "method"], sort=False)
        .agg(
            seeds=("seed", "nunique"),
            left_share_mean=("left_share", "mean"),
            left_share_std=("left_share", "std"),
            right_share_mean=("right_share", "mean"),
            right_share_std=("right_share", "std"),
        )
        .reset_index()
    )
    agg.to_csv(out / "attribution_summary.csv", index=False)
    section.add(
        "Share of each head's reliance on the left (fine) and right (coarse) hemisphere's half of the "
        "concatenated features; the two shares sum to 1. **weight_norm**: Frobenius norm of the head's "
        "weights over each half. **grad_x_input**: per test image, Σ|∂logit/∂f · f| over each half for "
        "the head's predicted class (for a linear head, the size of each feature's term in the logit), "
        "averaged over the test subset. Mean ± std over seeds. If the paper is right, the fine head "
        "leans left (left share > 0.5) and the coarse head leans right. In nets whose hemispheres "
        "exchange features (callosal rows), a half is that hemisphere's stream after the exchanges, so "
        "what the connections carried into a side counts as that side's share.",
        "",
    )
    table = pd.DataFrame(
        {
            "bilateral": agg["bilateral"],
            "head": agg["head"],
            "method": agg["method"],
            "seeds": agg["seeds"],
            "left share": [pm(m, s) for m, s in zip(agg.left_share_mean, agg.left_share_std, strict=True)],
            "right share": [pm(m, s) for m, s in zip(agg.right_share_mean, agg.right_share_std, strict=True)],
        }
    )
    section.table(table)
    path = figures.attribution_bars(df, out / "figures" / "attribution.png")
    section.figure(path, "Left-hemisphere share of each head's reliance (bars: mean over seeds; dots: seeds)")
    section.add(
        "Files: `attribution.csv` (per seed, with signed logit contributions), `attribution_summary.csv`."
    )
    return section
