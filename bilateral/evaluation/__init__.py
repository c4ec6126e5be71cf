"""What else specialisation buys, measured on a finished sweep: results/<sweep>/evaluation/.

    from bilateral.evaluation import run_evaluation
    run_evaluation("results/<sweep>", parts=["robustness"], images=500)

Parts (each its own module; each can run alone):
  robustness   FGSM and PGD (torchattacks) on each head, and on both heads' summed loss
  corruptions  the 15 common corruptions at 5 severities (imagecorruptions), cached per image set
  detection    AUROC of hierarchy-inconsistency, hemisphere-disagreement, ensemble-disagreement,
               max-softmax and energy scores for errors, attacks and corruptions
  transfer     linear probes and few-shot nearest-class-mean on classes held out of training
               (a sweep of experiments/transfer.yaml)

Every finished run of every model kind is evaluated from the checkpoint it was tested with. A part
that cannot run on the sweep says why in report.md; the other parts still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from bilateral.analysis.report import Section, write_report
from bilateral.evaluation.context import EvalContext, EvaluationError
from bilateral.extras import require
from bilateral.parts import PartsResult, run_parts

log = logging.getLogger(__name__)
PARTS = ("robustness", "corruptions", "detection", "transfer")
LIBRARIES = {  # module -> the parts that need it
    "matplotlib": PARTS,
    "torchattacks": ("robustness", "detection"),
    "imagecorruptions": ("corruptions", "detection"),
}

__all__ = ["PARTS", "EvaluationError", "PartsResult", "run_evaluation"]


def run_evaluation(
    sweep_root: str | Path,
    device: str = "auto",
    data_dir: str = "data",
    parts: Sequence[str] | None = None,
    images: int | None = None,
) -> PartsResult:
    """Run the chosen parts (default all); write CSVs, figures/ and report.md under <sweep>/evaluation.

    images caps the test images per seed (None: each run's whole test subset), and the held-out test
    images of the transfer part. Raises EvaluationError only when the directory is not a sweep or a
    part is unknown."""
    from bilateral.evaluation import corruptions, detection, robustness, transfer

    parts = list(PARTS if parts is None else parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise EvaluationError(
            f"unknown evaluation part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}"
        )
    ctx = EvalContext(sweep_root, device=device, data_dir=data_dir, images=images)
    out = ctx.root / "evaluation"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    modules = {
        "robustness": robustness,
        "corruptions": corruptions,
        "detection": detection,
        "transfer": transfer,
    }
    result = PartsResult(out=out, report=out / "report.md", damaged=ctx.damaged)

    def part(name: str, runner: Callable[[EvalContext, Path], Section]) -> Callable[[], Section]:
        def run() -> Section:
            for module, needed_by in LIBRARIES.items():
                if name in needed_by:
                    require(module, f"the evaluation part {name}")
            return runner(ctx, out)

        return run

    runners = {name: part(name, module.run) for name, module in modules.items()}
    sections = run_parts(parts, runners, result, "evaluation")
    write_report(out, ctx.root.name, sections, result.errors, _preamble(ctx, result), title="Evaluation")
    return result


def _preamble(ctx: EvalContext, result: PartsResult) -> list[str]:
    rows = [
        {"seed": e.seed, "model": e.model, "heads": ", ".join(e.heads) or "none", "run": e.run_id}
        for e in ctx.runs
    ]
    lines = [
        f"Sweep directory `{ctx.root}`; device `{ctx.device}`; test images per seed: "
        f"{ctx.images or 'all of each run`s test subset'}. Parts run: "
        f"{', '.join(f'{p} ({result.seconds[p]:.0f} s)' for p in result.done) or 'none'}.",
        "",
        "Every model is evaluated from the checkpoint it was tested with (its record's `tested_checkpoint`), "
        "on its own test subset; ensembles from the members their records name.",
        "",
    ]
    if rows:
        lines += ["Runs evaluated:", "", pd.DataFrame(rows).to_markdown(index=False), ""]
    lines += [f"- note: {n}" for n in ctx.notes]
    return lines
