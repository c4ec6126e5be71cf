"""Every figure of the analysis (matplotlib, headless): each function takes tables, writes one PNG
and returns its path. Titles, axis labels, legends and colour bars on every one."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from bilateral.kinds import all_kinds  # noqa: E402

LEFT_COLOUR, RIGHT_COLOUR = "tab:blue", "tab:orange"


def kind_colours() -> dict[str, str]:
    """Each kind's colour in figures, read from the registry when drawing (plug-in kinds included)."""
    return {kind.name: kind.colour for kind in all_kinds() if kind.colour}


REP_COLOURS = {
    "left": LEFT_COLOUR,
    "right": RIGHT_COLOUR,
    "concat": "tab:gray",
    "bilateral": "tab:green",
    **{kind.name: "tab:olive" for kind in all_kinds() if kind.from_hemispheres},
}
DPI = 110


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _seed_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("seed_")]


def _hbars(ax, df: pd.DataFrame, label_col: str, kinds: list[str], mono: bool) -> None:
    labels = list(dict.fromkeys(df[label_col]))
    y = np.arange(len(labels))
    height = 0.8 / len(kinds)
    colours = kind_colours()
    for k, kind in enumerate(kinds):
        d = df[df.bilateral == kind].set_index(label_col).reindex(labels)
        pos = y - 0.4 + height * (k + 0.5)
        ax.barh(
            pos,
            d["mean"],
            height,
            xerr=d["std"].fillna(0),
            color=colours.get(kind, "tab:gray"),
            alpha=0.8,
            label=kind,
            capsize=2,
        )
        for col in _seed_columns(d):
            ax.plot(d[col], pos, "k.", ms=3)
        for p, m, sd in zip(pos, d["mean"], d["std"].fillna(0), strict=True):
            ax.text(m + sd, p, f"  {round(m, 1):g}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontfamily="monospace" if mono else None, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, max(10.0, float((df["mean"] + df["std"].fillna(0)).max()) * 3))
    ax.grid(axis="x", alpha=0.3)


def scenario_bars(counts: pd.DataFrame, comp: pd.DataFrame, path: Path) -> Path:
    """Left: test images per scenario; right: complementarity events; one colour per bilateral run."""
    kinds = list(dict.fromkeys(counts["bilateral"]))
    seeds = len(_seed_columns(counts))
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [1, 1.1]})
    _hbars(a, counts, "scenario", kinds, mono=True)
    a.set_xlabel(f"test images, log scale (mean ± std over {seeds} seed{'s' * (seeds > 1)}; dots: seeds)")
    a.set_ylabel(
        "scenario  (L/R: left/right hemisphere, Bf/Bc: bilateral fine/coarse head; +/-: right/wrong)"
    )
    a.set_title("Images per correctness scenario")
    _hbars(b, comp, "event", kinds, mono=False)
    b.set_xlabel("test images, log scale (mean ± std over seeds)")
    b.set_title("Complementarity: what the bilateral heads fix and lose")
    fig.suptitle("Correctness scenarios on the test subset", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    handles, labels = a.get_legend_handles_labels()
    fig.legend(
        handles, labels, title="bilateral run", loc="upper center", ncols=2, bbox_to_anchor=(0.5, 0.96)
    )
    return _save(fig, path)


def gradcam_spread(pooled: pd.DataFrame, path: Path) -> Path:
    """Box plots of map entropy and area above half max, left vs right, for each source of maps."""
    panels = list(dict.fromkeys(pooled["panel"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 3.2 * len(panels)), 5))
    metrics = (
        ("entropy", "normalised entropy (1 = uniform, lower = focused)"),
        ("area_half_max", "fraction of image ≥ ½ of the map's max"),
    )
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for s, (side, colour) in enumerate((("left", LEFT_COLOUR), ("right", RIGHT_COLOUR))):
            data, pos = [], []
            for p, panel in enumerate(panels):
                v = pooled[(pooled.panel == panel) & (pooled.side == side)][metric].dropna().to_numpy()
                if len(v):
                    data.append(v)
                    pos.append(p + (s - 0.5) * 0.38)
            if data:
                bp = ax.boxplot(data, positions=pos, widths=0.33, patch_artist=True, showfliers=False)
                for box in bp["boxes"]:
                    box.set_facecolor(colour)
                    box.set_alpha(0.7)
                for median in bp["medians"]:
                    median.set_color("black")
        ax.set_xticks(range(len(panels)), panels, fontsize=8)
        ax.set_xlim(-0.7, len(panels) - 0.3)
        ax.set_ylabel(label)
        ax.set_title(f"Grad-CAM map spread: {metric.replace('_', ' ')}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(
            handles=[
                plt.Rectangle((0, 0), 1, 1, color=LEFT_COLOUR, alpha=0.7),
                plt.Rectangle((0, 0), 1, 1, color=RIGHT_COLOUR, alpha=0.7),
            ],
            labels=["left hemisphere (fine)", "right hemisphere (coarse)"],
            loc="best",
            fontsize=8,
        )
    fig.suptitle("How spread or local each hemisphere's Grad-CAM maps are (boxes: quartiles, all seeds)")
    fig.tight_layout()
    return _save(fig, path)


def gradcam_grid(
    images: np.ndarray, columns: dict[str, np.ndarray], row_labels: list[str], title: str, path: Path
) -> Path:
    """Rows: images; first column the image, then one Grad-CAM overlay per column (jet, 0..1)."""
    n, m = len(images), 1 + len(columns)
    fig, axes = plt.subplots(n, m, figsize=(1.45 * m + 1.6, 1.55 * n + 0.9), squeeze=False)
    norm = mcolors.Normalize(0, 1)
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(images[r], interpolation="nearest")
        ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
        for c, (name, maps) in enumerate(columns.items(), start=1):
            ax = axes[r, c]
            ax.imshow(images[r], interpolation="nearest")
            ax.imshow(maps[r], cmap="jet", norm=norm, alpha=0.5, interpolation="bilinear")
            if r == 0:
                ax.set_title(name, fontsize=8)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.945, 0.15, 0.012, 0.7))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="jet"), cax=cax, label="Grad-CAM (scaled per map)")
    return _save(fig, path)


def similarity_joint(
    pairs: pd.DataFrame,
    scenarios: list[str],
    colour: str,
    title: str,
    path: Path,
    max_points: int = 3000,
    seed: int = 0,
) -> Path:
    """One scatter per scenario: x = left similarity, y = right similarity, colour = `colour` rep."""
    cols = 4 if len(scenarios) == 16 else min(4, len(scenarios))
    rows = -(-len(scenarios) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 1, 3.0 * rows + 0.8), squeeze=False)
    lo = 0.0
    if len(pairs):  # start the axes just below the bulk of the data (features are mostly >= 0)
        lo = float(min(pairs["left"].quantile(0.001), pairs["right"].quantile(0.001)))
        lo = np.floor(lo * 10) / 10
    vmin = float(pairs[colour].quantile(0.01)) if len(pairs) else 0.0
    vmax = float(pairs[colour].quantile(0.99)) if len(pairs) else 1.0
    norm = mcolors.Normalize(vmin, max(vmax, vmin + 1e-6))
    rng = np.random.default_rng(seed)
    for ax, scenario in zip(axes.ravel(), scenarios, strict=False):
        sel = pairs[(pairs.group_i == scenario) & (pairs.group_j == scenario)]
        n = len(sel)
        if n > max_points:
            sel = sel.iloc[np.sort(rng.choice(n, size=max_points, replace=False))]
        ax.scatter(sel["left"], sel["right"], c=sel[colour], cmap="viridis", norm=norm, s=5, alpha=0.7, lw=0)
        ax.plot([lo, 1], [lo, 1], color="0.6", lw=0.8, ls="--")
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.set_title(f"{scenario}\n{n:,} pairs", fontsize=8, fontfamily="monospace")
        if n:
            ax.text(
                0.97,
                0.03,
                f"mean L {sel['left'].mean():.2f}\nmean R {sel['right'].mean():.2f}\n"
                f"mean {colour} {sel[colour].mean():.2f}",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none"},
            )
        else:
            ax.text(0.5, 0.5, "no pairs", transform=ax.transAxes, ha="center", color="0.5")
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("cosine sim., left features", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("cosine sim., right features", fontsize=8)
    for ax in axes.ravel()[len(scenarios) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    cax = fig.add_axes((0.935, 0.15, 0.012, 0.7))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), cax=cax, label=f"cosine sim., {colour}")
    return _save(fig, path)


def similarity_bars(agg: pd.DataFrame, reps: list[str], path: Path) -> Path:
    """Mean same-class similarity per scenario (x), one marker per representation, ± std over seeds."""
    agg = agg[agg["pairs"] > 0]
    x = np.arange(len(agg))
    step = 0.7 / len(reps)
    fig, ax = plt.subplots(figsize=(max(9, 0.75 * len(agg) + 3), 5))
    for k, rep in enumerate(reps):
        ax.errorbar(
            x - 0.35 + step * (k + 0.5),
            agg[f"{rep}_mean"],
            yerr=agg[f"{rep}_std_over_seeds"].fillna(0),
            fmt="o",
            ms=5,
            capsize=2,
            color=REP_COLOURS.get(rep, None),
            label=rep,
        )
    for edge in x[:-1] + 0.5:
        ax.axvline(edge, color="0.9", lw=0.8)
    ticks = [
        f"{s}\n({p:,.1f}".removesuffix(".0") + " pairs)"
        for s, p in zip(agg["scenario"], agg["pairs"], strict=True)
    ]
    ax.set_xticks(x, ticks)
    ax.tick_params(axis="x", labelsize=7, labelrotation=90)
    ax.set_xlabel("scenario (same-class pairs per seed with both images in it)")
    ax.set_ylabel("mean cosine similarity of same-class pairs")
    ax.set_title("Same-fine-label similarity by representation and scenario (mean ± std over seeds)")
    ax.legend(title="representation", fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def attribution_bars(df: pd.DataFrame, path: Path) -> Path:
    """Left-hemisphere share per head and method (1 - it is the right share); 0.5 = no preference."""
    kinds = list(dict.fromkeys(df["bilateral"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.5), squeeze=False)
    methods = (("weight_norm", "weight norm"), ("grad_x_input", "gradient × input"))
    for ax, kind in zip(axes[0], kinds, strict=True):
        d = df[df.bilateral == kind]
        heads = list(dict.fromkeys(d["head"]))
        x = np.arange(len(heads))
        for k, (method, label) in enumerate(methods):
            pos = x - 0.2 + 0.4 * k
            means, stds = [], []
            for h in heads:
                v = d[(d["head"] == h) & (d.method == method)]["left_share"]
                means.append(v.mean())
                stds.append(v.std() if len(v) > 1 else 0.0)
                ax.plot([pos[heads.index(h)]] * len(v), v, "k.", ms=4)
            ax.bar(
                pos,
                means,
                0.38,
                yerr=stds,
                capsize=3,
                label=label,
                color=("tab:cyan", "tab:red")[k],
                alpha=0.8,
            )
            for p, m in zip(pos, means, strict=True):
                ax.text(p, 0.03, f"{m:.2f}", ha="center", fontsize=9, color="white", fontweight="bold")
        ax.axhline(0.5, color="0.3", ls="--", lw=1)
        ax.set_ylim(0, 1)
        ax.set_xticks(x, [f"{h} head" for h in heads])
        ax.set_ylabel("left-hemisphere share\n(> 0.5 leans left, < 0.5 leans right; right share = 1 − it)")
        ax.set_title(f"{kind}\nreliance on the left (fine) hemisphere")
        ax.legend(title="measure", fontsize=8, loc="upper right")
    fig.suptitle("Head attribution: each head's share of reliance on the left hemisphere (dots: seeds)")
    fig.tight_layout()
    return _save(fig, path)
