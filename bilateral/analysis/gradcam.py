"""Grad-CAM (pytorch-grad-cam) of each hemisphere on its own and of the bilateral network's heads.

Target layers: the backbone's `gradcam_layers` (ResNet-9: its two residual blocks) whose output is
larger than 1x1 for a 32x32 input; a 1x1 layer would give a constant map. At 32x32, ResNet-9's
res1 is 16x16 and res2 is 4x4. Like pytorch-grad-cam with several target layers, each layer's map
is ReLU'd, min-max scaled per image, resized to 32x32, and the layers' maps are averaged and
scaled again, so every map lies in [0, 1] (all zeros when the ReLU removes everything).

For the bilateral net, one backward pass per target (the predicted class of the fine head, of the
coarse head, or the sum of both logits) gives the maps of the left and right hemispheres' layers,
kept apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from torch import Tensor, nn

from bilateral.analysis import figures
from bilateral.analysis.context import LEFT, RIGHT, SPECIALISED, SweepContext
from bilateral.analysis.report import Section, pm
from bilateral.analysis.scenarios import JUDGES, correctness_table

log = logging.getLogger(__name__)
TARGETS = ("fine", "coarse", "sum")
SIDES = ("left", "right")


class HeadOutput(nn.Module):
    """Adapts a dict-returning net to pytorch-grad-cam: one head's logits, or for "sum" the fine and
    coarse logits side by side (a SumOfPredicted target then adds the two predicted-class logits)."""

    def __init__(self, net: nn.Module, head: str) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if self.head == "sum":
            return torch.cat([out["fine"], out["coarse"]], dim=1)
        return out[self.head]


class SumOfPredicted:
    """Target = fine logit of class `fine` + coarse logit of class `coarse` (columns after num_fine)."""

    def __init__(self, fine: int, coarse: int, num_fine: int) -> None:
        self.fine, self.coarse, self.num_fine = fine, coarse, num_fine

    def __call__(self, output: Tensor) -> Tensor:
        return output[..., self.fine] + output[..., self.num_fine + self.coarse]


class _PerLayerGradCAM(GradCAM):
    """GradCAM that returns every target layer's (scaled, resized) map instead of their mean."""

    def aggregate_multi_layers(self, cam_per_target_layer):
        return np.concatenate(cam_per_target_layer, axis=1)  # (B, layers, H, W)


@torch.no_grad()
def spatial_layers(backbone: nn.Module, size: int = 32) -> list[tuple[nn.Module, tuple[int, int]]]:
    """The backbone's gradcam_layers whose output is larger than 1x1 for a size x size input, with
    that spatial size."""
    sizes: dict[int, tuple[int, int]] = {}
    hooks = [
        layer.register_forward_hook(lambda m, i, o, k=k: sizes.__setitem__(k, tuple(o.shape[-2:])))
        for k, layer in enumerate(backbone.gradcam_layers)
    ]
    was_training = backbone.training
    try:
        backbone.eval()
        param = next(backbone.parameters())
        backbone(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype))
    finally:
        backbone.train(was_training)
        for h in hooks:
            h.remove()
    return [(layer, sizes[k]) for k, layer in enumerate(backbone.gradcam_layers) if max(sizes[k]) > 1]


def gradcam_maps(
    net: nn.Module,
    groups: dict[str, Sequence[nn.Module]],
    head: str,
    x: Tensor,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Grad-CAM maps (N, H, W) in [0, 1] of each group of target layers, for the predicted class of
    `head` ("fine", "coarse", or "sum" of both predicted-class logits), from one backward per batch."""
    names = list(groups)
    layers = [layer for name in names for layer in groups[name]]
    owner = np.repeat(np.arange(len(names)), [len(groups[n]) for n in names])
    wrapper = HeadOutput(net, head).eval()
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with _PerLayerGradCAM(model=wrapper, target_layers=layers) as cam:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            targets = None  # pytorch-grad-cam's default: the head's predicted class
            if head == "sum":
                with torch.no_grad():
                    logits = net(xb)
                targets = [
                    SumOfPredicted(int(f), int(c), logits["fine"].shape[1])
                    for f, c in zip(logits["fine"].argmax(1), logits["coarse"].argmax(1), strict=True)
                ]
            per_layer = cam(input_tensor=xb, targets=targets)
            for g, name in enumerate(names):
                out[name].append(scale_cam_image(per_layer[:, owner == g].mean(axis=1)))
    return {n: np.concatenate(v) for n, v in out.items()}


def hemisphere_maps(model: nn.Module, x: Tensor, batch_size: int = 256) -> np.ndarray:
    """A hemisphere run (UnilateralNet with one head) on its own: maps for its predicted class."""
    (head,) = list(model.heads)
    layers = [layer for layer, _ in spatial_layers(model.backbone)]
    return gradcam_maps(model, {"maps": layers}, head, x, batch_size)["maps"]


def bilateral_maps(model: nn.Module, x: Tensor, batch_size: int = 256) -> dict[tuple[str, str], np.ndarray]:
    """{(target, side): maps} of a bilateral net for the fine, coarse and summed targets."""
    groups = {side: [layer for layer, _ in spatial_layers(getattr(model, side))] for side in SIDES}
    maps = {}
    for target in TARGETS:
        for side, m in gradcam_maps(model, groups, target, x, batch_size).items():
            maps[(target, side)] = m
    return maps


def map_entropy(maps: np.ndarray) -> np.ndarray:
    """Entropy of each map taken as a distribution over pixels, divided by log(pixels): 1 = spread
    evenly, near 0 = one hot spot. NaN for an all-zero map."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    total = flat.sum(1, keepdims=True)
    p = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1) / np.log(flat.shape[1])
    return np.where(total[:, 0] > 0, h, np.nan)


def area_above_half_max(maps: np.ndarray) -> np.ndarray:
    """Fraction of pixels at or above half the map's maximum. NaN for an all-zero map."""
    flat = maps.reshape(len(maps), -1)
    peak = flat.max(1, keepdims=True)
    area = (flat >= 0.5 * peak).mean(1)
    return np.where(peak[:, 0] > 0, area, np.nan)


def spread_rows(maps: np.ndarray, **labels) -> dict:
    entropy, area = map_entropy(maps), area_above_half_max(maps)
    return {
        **labels,
        "images": len(maps),
        "empty_maps": int(np.isnan(entropy).sum()),
        "entropy_mean": float(np.nanmean(entropy)) if np.isfinite(entropy).any() else np.nan,
        "entropy_std": float(np.nanstd(entropy)) if np.isfinite(entropy).any() else np.nan,
        "area_half_max_mean": float(np.nanmean(area)) if np.isfinite(area).any() else np.nan,
        "area_half_max_std": float(np.nanstd(area)) if np.isfinite(area).any() else np.nan,
    }


def _subset(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    if limit is None or limit <= 0 or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


GRID_SCENARIOS = [
    ("both hemispheres wrong, both bilateral heads right", (False, False, True, True)),
    ("both hemispheres right, both bilateral heads wrong", (True, True, False, False)),
    ("left wrong, right right, both bilateral heads right", (False, True, True, True)),
    ("all four right", (True, True, True, True)),
]


def run(ctx: SweepContext, out: Path, max_images: int | None = 1000, grid_images: int = 6) -> Section:
    seeds = [s for s in ctx.seeds if any(k in ctx.seeds[s] for k in (LEFT, RIGHT, *ctx.bilateral_rows))]
    if not seeds:
        ctx.require("Grad-CAM", LEFT, RIGHT, SPECIALISED)
    section = Section("2. Grad-CAM")
    rows, pooled = [], []
    layer_note = None
    for seed in seeds:
        runs = ctx.seeds[seed]
        any_run = next(iter(runs.values()))
        n = len(ctx.test_index(seed))
        pos = _subset(n, max_images, seed)
        x, _ = ctx.test_images(any_run, pos)
        sources: dict[tuple[str, str, str], np.ndarray] = {}
        for kind, side in ((LEFT, "left"), (RIGHT, "right")):
            if kind in runs:
                sources[("hemisphere alone", "predicted", side)] = hemisphere_maps(ctx.model(runs[kind]), x)
        for bil in [k for k in ctx.bilateral_rows if k in runs]:  # every bilateral row, callosal too
            model = ctx.model(runs[bil])
            if layer_note is None:
                layer_note = ", ".join(
                    f"{side}: {type(layer).__name__} {h}x{w}"
                    for side in SIDES
                    for layer, (h, w) in spatial_layers(getattr(model, side))
                )
            for (target, side), m in bilateral_maps(model, x).items():
                sources[(bil, target, side)] = m
        for (source, target, side), m in sources.items():
            rows.append(spread_rows(m, seed=seed, source=source, target=target, side=side))
            pooled.append(
                pd.DataFrame(
                    {
                        "seed": seed,
                        "panel": _panel(source, target),
                        "side": side,
                        "entropy": map_entropy(m),
                        "area_half_max": area_above_half_max(m),
                    }
                )
            )
    if layer_note is None:
        model = ctx.model(next(iter(ctx.seeds[seeds[0]].values())))
        backbone = getattr(model, "backbone", None) or model.left
        layer_note = ", ".join(f"{type(m).__name__} {h}x{w}" for m, (h, w) in spatial_layers(backbone))
    spread = pd.DataFrame(rows)
    spread.to_csv(out / "gradcam_spread.csv", index=False)
    summary = (
        spread.groupby(["source", "target", "side"], sort=False)
        .agg(
            seeds=("seed", "nunique"),
            images=("images", "sum"),
            empty_maps=("empty_maps", "sum"),
            entropy_mean=("entropy_mean", "mean"),
            entropy_std=("entropy_mean", "std"),
            area_half_max_mean=("area_half_max_mean", "mean"),
            area_half_max_std=("area_half_max_mean", "std"),
        )
        .reset_index()
    )
    summary.to_csv(out / "gradcam_spread_summary.csv", index=False)
    section.add(
        f"Target layers (those of each backbone's residual blocks / stages with output > 1x1 at 32x32): "
        f"{layer_note}. Maps are computed with `pytorch_grad_cam.GradCAM`; the layers of one hemisphere "
        f"are averaged as pytorch-grad-cam does. 'hemisphere alone' = the {LEFT} (left) or "
        f"{RIGHT} (right) run with its own head and predicted class; the bilateral rows use "
        "the bilateral net's heads (target: predicted class of the fine head, of the coarse head, or "
        "the sum of both predicted-class logits) and show each hemisphere's layers apart.",
        "",
        f"**Spread** over {_images_note(max_images)} per seed: normalised entropy of the map (1 = "
        "uniform, lower = more focused) and the fraction of the image at or above half the map's "
        "maximum. Mean over images, then mean ± std over seeds; 'empty' = maps that are all zero.",
        "",
    )
    table = pd.DataFrame(
        {
            "source": summary["source"],
            "target": summary["target"],
            "side": summary["side"],
            "entropy": [pm(m, s) for m, s in zip(summary.entropy_mean, summary.entropy_std, strict=True)],
            "area ≥ ½ max": [
                pm(m, s) for m, s in zip(summary.area_half_max_mean, summary.area_half_max_std, strict=True)
            ],
            "empty maps": summary["empty_maps"].astype(str) + " / " + summary["images"].astype(str),
        }
    )
    section.table(table)
    for value in ("entropy_mean", "area_half_max_mean"):  # right minus left, per map source and target
        section.compare_seeds(spread, value, ["source", "target"], "side", "left")
    path = figures.gradcam_spread(
        pd.concat(pooled, ignore_index=True), out / "figures" / "gradcam_spread.png"
    )
    section.figure(path, "Spread of Grad-CAM maps, left vs right hemisphere (all seeds pooled)")
    section.add(*_grids(ctx, out, seeds[0], grid_images, section))
    section.add("Files: `gradcam_spread.csv` (per seed), `gradcam_spread_summary.csv`.")
    return section


def _panel(source: str, target: str) -> str:
    if source == "hemisphere alone":
        return "hemisphere alone\n(own head, predicted class)"
    return f"{source}\n{target} target" if target != "sum" else f"{source}\nsummed target"


def _images_note(max_images: int | None) -> str:
    return "all test images" if not max_images or max_images <= 0 else f"up to {max_images} test images"


def _grids(ctx: SweepContext, out: Path, seed: int, per_grid: int, section: Section) -> list[str]:
    """Image grids for chosen scenarios of one seed: image, each hemisphere alone, bilateral maps."""
    runs = ctx.seeds[seed]
    bil = ctx.bilateral_kind(seed)
    if not all(k in runs for k in (LEFT, RIGHT)) or bil is None:
        return ["Grids by scenario need both hemisphere runs and a bilateral run of one seed.", ""]
    table = correctness_table(*(ctx.predictions(runs[k].run_id) for k in (LEFT, RIGHT, bil)))
    data = ctx.data(runs[LEFT])
    preds = {k: ctx.predictions(runs[k].run_id) for k in (LEFT, RIGHT, bil)}
    notes = [
        f"**Grids** (seed {seed}, bilateral = {bil}; the first {per_grid} test images of each scenario):",
        "",
    ]
    for title, flags in GRID_SCENARIOS:
        mask = np.all(table[list(JUDGES)].to_numpy() == np.array(flags), axis=1)
        pos = np.flatnonzero(mask)[:per_grid]
        if len(pos) == 0:
            notes += [f"- no test image is '{title}' in seed {seed}.", ""]
            continue
        x, raw = ctx.test_images(runs[LEFT], pos)
        columns = {
            "left alone": hemisphere_maps(ctx.model(runs[LEFT]), x),
            "right alone": hemisphere_maps(ctx.model(runs[RIGHT]), x),
        }
        for (target, side), m in bilateral_maps(ctx.model(runs[bil]), x).items():
            columns[f"bilateral {target}\n{side} hemisphere"] = m
        labels = []
        for p in pos:
            fine, coarse = int(table.label_fine[p]), int(table.label_coarse[p])
            labels.append(
                f"true {data.fine_names[fine]} / {data.coarse_names[coarse]}\n"
                f"L: {data.fine_names[preds[LEFT]['logits_fine'][p].argmax()]}  "
                f"R: {data.coarse_names[preds[RIGHT]['logits_coarse'][p].argmax()]}\n"
                f"Bf: {data.fine_names[preds[bil]['logits_fine'][p].argmax()]}  "
                f"Bc: {data.coarse_names[preds[bil]['logits_coarse'][p].argmax()]}"
            )
        slug = title.replace(",", "").replace(" ", "_")
        path = figures.gradcam_grid(
            raw,
            columns,
            labels,
            f"Grad-CAM, seed {seed}: {title} ({mask.sum()} images)",
            out / "figures" / f"gradcam_{slug}.png",
        )
        section.files.append(path)
        notes += [
            f"![{title}](figures/{path.name})",
            "",
            f"*{title}: {mask.sum()} test images in seed {seed}*",
            "",
        ]
    return notes
