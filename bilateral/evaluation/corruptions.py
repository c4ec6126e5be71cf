"""Common corruptions: the 15 corruptions of Hendrycks & Dietterich at 5 severities, applied to each
seed's evaluation images, and every model's accuracy on them.

The corruptions come from `imagecorruptions-imaug` (the imgaug project's maintained release of
`imagecorruptions`; the original 1.1.2 no longer runs with current scikit-image). Each image's
corruption is drawn from a seed fixed by its position, corruption and severity, so the images are
the same on every call; they are cached under <data_dir>/corruptions/<images>/ so that every model
of every sweep on the same images sees the same corrupted ones.
"""

from __future__ import annotations

import io
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bilateral.analysis.report import Section, pm
from bilateral.evaluation import figures
from bilateral.evaluation.context import EvalContext, EvaluationError, TestImages, accuracy, logits
from bilateral.extras import require
from bilateral.store import write_atomic

log = logging.getLogger(__name__)
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIZE = 32  # imagecorruptions refuses smaller images
SEEDED = ("impulse_noise", "glass_blur")  # draw from their own generators: they take a seed argument


def corruption_names() -> list[str]:
    return list(require("imagecorruptions", "the evaluation's common corruptions").get_corruption_names())


def corrupt_images(raw: np.ndarray, name: str, severity: int) -> np.ndarray:
    """The uint8 NHWC images under one corruption and severity, the same on every call."""
    corrupt = require("imagecorruptions", "the evaluation's common corruptions").corrupt
    if raw.shape[1] < MIN_SIZE or raw.shape[2] < MIN_SIZE:
        raise EvaluationError(
            f"common corruptions need images of at least {MIN_SIZE}x{MIN_SIZE} pixels (imagecorruptions); "
            f"these are {raw.shape[1]}x{raw.shape[2]}: use larger data (navon:32 and up)"
        )
    out = np.empty_like(raw)
    for i, image in enumerate(raw):
        seed = zlib.crc32(f"{name}/{severity}/{i}".encode())
        np.random.seed(seed)
        extra = {"seed": seed} if name in SEEDED else {}
        corrupted = corrupt(image, corruption_name=name, severity=severity, **extra)
        out[i] = np.clip(np.asarray(corrupted, dtype=np.float64), 0, 255).round().astype(np.uint8)[..., :3]
    return out


def cached_corruption(images: TestImages, name: str, severity: int, data_dir: str) -> np.ndarray:
    """corrupt_images, read from / written to the cache of these exact images."""
    path = Path(data_dir) / "corruptions" / images.key() / f"{name}-{severity}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape == images.raw.shape and cached.dtype == np.uint8:
                return cached
        except (OSError, ValueError) as exc:
            log.warning("%s is damaged (%s); computing it again", path, exc)
    corrupted = corrupt_images(images.raw, name, severity)
    buffer = io.BytesIO()
    np.save(buffer, corrupted)
    write_atomic(path, buffer.getvalue())
    return corrupted


def run(ctx: EvalContext, out: Path) -> Section:
    evaluated = ctx.with_heads()
    if not evaluated:
        raise EvaluationError(
            "common corruptions: the sweep has no finished run with a head; train some first"
        )
    names = corruption_names()
    rows = []
    for seed in ctx.seeds:
        images = ctx.test_images(seed)
        runs = [e for e in evaluated if e.seed == seed]
        clean = {
            e.run_id: logits(ctx.model(e.run_id), ctx.normalised(e.run_id, images.raw), e.heads) for e in runs
        }
        for name in names:
            log.info("corruptions, seed %d: %s", seed, name)
            for severity in SEVERITIES:
                corrupted = cached_corruption(images, name, severity, ctx.data_dir)
                for e in runs:
                    z = logits(ctx.model(e.run_id), ctx.normalised(e.run_id, corrupted), e.heads)
                    for h in e.heads:
                        rows.append(
                            dict(
                                seed=seed,
                                model=e.model,
                                run=e.run_id,
                                head=h,
                                corruption=name,
                                severity=severity,
                                acc=accuracy(z[h], images.labels(h)),
                                clean_acc=accuracy(clean[e.run_id][h], images.labels(h)),
                                images=len(images.raw),
                            )
                        )
    table = pd.DataFrame(rows)
    table["relative"] = table["acc"] / table["clean_acc"].where(table["clean_acc"] > 0)
    write_atomic(out / "corruptions.csv", table.to_csv(index=False).encode())
    section = Section("Common corruptions")
    section.add(
        f"The {len(names)} corruptions of Hendrycks & Dietterich (imagecorruptions) at severities 1-5 on "
        f"{table['images'].iloc[0]} test images per seed, the same corrupted images for every model. mCA: "
        "mean accuracy over every corruption and severity; relative: mCA / clean accuracy. Mean ± std over "
        "seeds; per corruption, severity and seed: `corruptions.csv`.",
        "",
    )
    per_seed = table.groupby(["model", "head", "seed"], sort=False).agg(
        clean=("clean_acc", "first"), mca=("acc", "mean"), rel=("relative", "mean")
    )
    summary = per_seed.groupby(["model", "head"], sort=False).agg(["mean", "std"]).reset_index()
    shown = pd.DataFrame({"model": summary["model"], "head": summary["head"]})
    for col, label in (("clean", "clean"), ("mca", "mCA"), ("rel", "relative mCA")):
        shown[label] = [pm(m, s) for m, s in zip(summary[(col, "mean")], summary[(col, "std")], strict=True)]
    section.table(shown, numparse=False)
    section.figure(
        figures.corruption_curves(table, out / "figures" / "corruptions.png"),
        "Accuracy relative to clean against severity, mean over corruptions and seeds",
    )
    section.files.append(out / "corruptions.csv")
    return section
