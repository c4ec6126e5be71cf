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
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bilateral.analysis.report import Section, write_report
from bilateral.errors import BilateralError
from bilateral.evaluation.context import EvalContext, EvaluationError
from bilateral.extras import require

log = logging.getLogger(__name__)
PARTS = ("robustness", "corruptions", "detection", "transfer")
LIBRARIES = {  # module -> the parts that need it
    "matplotlib": PARTS,
    "torchattacks": ("robustness", "detection"),
    "imagecorruptions": ("corruptions", "detection"),
}

__all__ = ["PARTS", "EvaluationError", "EvaluationResult", "run_evaluation"]


@dataclass
class EvaluationResult:
    out: Path  # <sweep>/evaluation
    report: Path
    done: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # part -> why it could not run
    damaged: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_evaluation(
    sweep_root: str | Path,
    device: str = "auto",
    data_dir: str = "data",
    parts: Sequence[str] | None = None,
    images: int | None = None,
) -> EvaluationResult:
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
    runners = {
        "robustness": robustness.run,
        "corruptions": corruptions.run,
        "detection": detection.run,
        "transfer": transfer.run,
    }
    result = EvaluationResult(out=out, report=out / "report.md", damaged=ctx.damaged)
    sections: list[Section] = []
    for part in parts:
        tic = time.perf_counter()
        try:
            for module, needed_by in LIBRARIES.items():
                if part in needed_by:
                    require(module, f"the evaluation part {part}")
            sections.append(runners[part](ctx, out))
            result.done.append(part)
        except BilateralError as exc:
            result.errors[part] = str(exc)
            log.error("evaluation part %s could not run: %s", part, exc)
        except Exception as exc:  # a bug in one part must not lose the others
            result.errors[part] = f"{type(exc).__name__}: {exc} (traceback in evaluation/errors.log)"
            with open(out / "errors.log", "a") as f:
                f.write(f"--- {part}\n{traceback.format_exc()}\n")
            log.exception("evaluation part %s failed", part)
        result.seconds[part] = time.perf_counter() - tic
        log.info("evaluation part %s: %.0f s", part, result.seconds[part])
    write_report(out, ctx.root.name, sections, result.errors, _preamble(ctx, result), title="Evaluation")
    return result


def _preamble(ctx: EvalContext, result: EvaluationResult) -> list[str]:
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
