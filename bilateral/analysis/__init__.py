"""The paper's analysis of a finished sweep, as numbers and figures: results/<sweep>/analysis/.

    from bilateral.analysis import analyze_sweep
    analyze_sweep("results/smoke-synthetic-resnet9")      # -> results/smoke-synthetic-resnet9/analysis

Parts (each its own module; run_analysis(parts=...) picks some):
  scenarios    16 correctness scenarios per test image, counts per seed, complementarity
  gradcam      Grad-CAM of each hemisphere alone and of the bilateral heads; map spread; image grids
  similarity   cosine similarity of same-class pairs in left / right / concat / bilateral features
  attribution  each bilateral head's reliance on each hemisphere (weight norms, gradient x input)
  probes       linear probes of each hemisphere's validation features for the fine and coarse labels

A part that cannot run on the sweep (say, no bilateral run finished) is reported in report.md with
what to train; the other parts still run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bilateral.analysis.context import KINDS, AnalysisError, SweepContext
from bilateral.analysis.report import write_report
from bilateral.extras import require
from bilateral.parts import PartsResult, run_parts

log = logging.getLogger(__name__)
PARTS = ("scenarios", "gradcam", "similarity", "attribution", "probes")
LIBRARIES = ("matplotlib", "pytorch_grad_cam")  # the `analysis` extra: figures, Grad-CAM

__all__ = ["PARTS", "AnalysisError", "AnalysisResult", "analyze_sweep", "run_analysis"]


AnalysisResult = PartsResult  # what run_analysis returns


def run_analysis(
    sweep_root: str | Path,
    device: str = "auto",
    data_dir: str = "data",
    parts: Sequence[str] | None = None,
    gradcam_images: int | None = 1000,
) -> AnalysisResult:
    """Run the chosen parts (default all) on a finished sweep; write CSVs, figures/ and report.md.

    gradcam_images caps the test images per seed for the Grad-CAM spread statistics (None or 0: all;
    full-width nets on a CPU take a while). Raises AnalysisError only when the directory is not a
    sweep; a part that cannot run is recorded in `errors` and in report.md.
    """
    for module in LIBRARIES:
        require(module, "the analysis (figures, Grad-CAM)")
    from bilateral.analysis import attribution, gradcam, probes, scenarios, similarity

    parts = list(PARTS if parts is None else parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise AnalysisError(f"unknown analysis part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    ctx = SweepContext(sweep_root, device=device, data_dir=data_dir)
    out = ctx.root / "analysis"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    runners = {
        "scenarios": lambda: scenarios.run(ctx, out),
        "gradcam": lambda: gradcam.run(ctx, out, max_images=gradcam_images),
        "similarity": lambda: similarity.run(ctx, out),
        "attribution": lambda: attribution.run(ctx, out),
        "probes": lambda: probes.run(ctx, out),
    }
    result = PartsResult(out=out, report=out / "report.md", damaged=ctx.damaged)
    sections = run_parts(parts, runners, result, "analysis")
    write_report(out, ctx.root.name, sections, result.errors, _preamble(ctx, result))
    return result


def analyze_sweep(sweep_root: str | Path, device: str = "auto", data_dir: str = "data") -> Path:
    """Every part of the analysis on a finished sweep; returns <sweep>/analysis/ (see report.md there)."""
    return run_analysis(sweep_root, device=device, data_dir=data_dir).out


def _preamble(ctx: SweepContext, result: PartsResult) -> list[str]:
    rows = []
    for seed, runs in sorted(ctx.seeds.items()):
        for kind in KINDS:
            if kind in runs:
                r = ctx.record(runs[kind].run_id)
                rows.append(
                    {
                        "seed": seed,
                        "model": kind,
                        "run": runs[kind].run_id,
                        "test fine acc": r.get("test_acc_fine"),
                        "test coarse acc": r.get("test_acc_coarse"),
                        "test images": r.get("split", {}).get("test"),
                    }
                )
    lines = [
        f"Sweep directory `{ctx.root}`; device `{ctx.device}`. Parts run: "
        f"{', '.join(f'{p} ({result.seconds[p]:.0f} s)' for p in result.done) or 'none'}.",
        "",
        "Every number below is on each run's own test subset (predictions.npz `test_index`), with "
        "the training data's normalisation, from the runs' best-on-validation checkpoints.",
        "",
    ]
    if rows:
        lines += ["Runs analysed:", "", pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"), ""]
    if ctx.notes:
        lines += [*[f"- note: {n}" for n in ctx.notes], ""]
    if ctx.checks:
        lines += ["Consistency checks:", ""]
        lines += [f"- {'ok' if c.ok else '**FAILED**'}: {c.what}: {c.value:.6g}" for c in ctx.checks]
        lines.append("")
    return lines
