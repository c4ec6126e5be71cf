"""Detecting errors, attacks and corruptions with the label hierarchy.

A net with a fine and a coarse head predicts both; when the coarse head disagrees with the parent
of the fine prediction, something is wrong. Scores (higher = more suspect), per test image:
  msp          1 - the maximum softmax probability of the main head (fine where there is one)
  energy       -logsumexp of the main head's logits (Liu et al. 2020)
  hierarchy    total variation between the coarse head's distribution and the fine head's summed
               into coarse classes (0 when the two heads agree exactly); nets with both heads
  hemispheres  the same between the right hemisphere's coarse head and the left hemisphere's fine
               head, for bilateral nets built from this seed's hemispheres
  members      mean total variation between each ensemble member's and the ensemble's fine
               distribution: the members' disagreement, the strong baseline
AUROC of each score for three tasks: misclassified clean images against correct ones (the main
head), PGD images (eps 4/255 on the main head) against clean ones, and corrupted images (every
corruption at severity 3, one per image in turn) against clean ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import logsumexp, softmax

from bilateral.analysis.report import Section, pm
from bilateral.evaluation import figures
from bilateral.evaluation.context import EvalContext, Evaluated, EvaluationError, logits
from bilateral.evaluation.corruptions import cached_corruption, corruption_names
from bilateral.evaluation.robustness import HeadLogits, adversarial
from bilateral.kinds import kind_of
from bilateral.report import reference_model
from bilateral.store import write_atomic

log = logging.getLogger(__name__)
ATTACK_EPS = 4  # /255
CORRUPTION_SEVERITY = 3
TASKS = ("error", "adversarial", "corruption")


def to_coarse(p_fine: np.ndarray, fine_to_coarse: np.ndarray, num_coarse: int) -> np.ndarray:
    """A fine distribution summed into its coarse classes."""
    out = np.zeros((len(p_fine), num_coarse))
    np.add.at(out.T, fine_to_coarse, p_fine.T)
    return out


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(p - q).sum(1)


def inconsistency(
    fine_logits: np.ndarray, coarse_logits: np.ndarray, fine_to_coarse: np.ndarray
) -> np.ndarray:
    """How far the coarse head's distribution is from the fine head's summed into coarse classes."""
    p_coarse = softmax(coarse_logits, axis=1)
    return total_variation(
        p_coarse, to_coarse(softmax(fine_logits, axis=1), fine_to_coarse, p_coarse.shape[1])
    )


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of score for telling positive (True) images apart; NaN with one class."""
    from sklearn.metrics import roc_auc_score

    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, score))


class Scorer:
    """The scores of one run's net on any batch of images."""

    def __init__(self, ctx: EvalContext, ev: Evaluated):
        self.ctx, self.ev = ctx, ev
        self.net = ctx.model(ev.run_id)
        data = ctx.data(ev.run_id)
        self.f2c, self.num_coarse = data.fine_to_coarse, data.num_coarse
        self.main = ev.heads[0]
        self.hemispheres = self._hemispheres() if self.f2c is not None else None

    def _hemispheres(self) -> tuple[str, str] | None:
        """(left run, right run) this bilateral net was built from, each with its own head."""
        if self.ev.role != "bilateral":
            return None
        sides = {}
        for dep in self.ctx.record(self.ev.run_id)["spec"].get("depends_on", []):
            record = self.ctx.finished(dep)
            if record is None:
                continue
            role = kind_of(record["spec"]["kind"], record["spec"].get("plugin", "")).role
            head = {"left": "fine", "right": "coarse"}.get(role)
            if head and f"test_acc_{head}" in record:
                sides[role] = dep
        return (sides["left"], sides["right"]) if len(sides) == 2 else None

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        z = logits(self.net, x, self.ev.heads)
        main = z[self.main]
        out = {
            "msp": 1 - softmax(main, axis=1).max(1),
            "energy": -logsumexp(main, axis=1),
        }
        if self.f2c is not None and set(self.ev.heads) == {"fine", "coarse"}:
            out["hierarchy"] = inconsistency(z["fine"], z["coarse"], self.f2c)
        if self.hemispheres:
            left, right = self.hemispheres
            out["hemispheres"] = inconsistency(
                logits(self.ctx.model(left), x, ("fine",))["fine"],
                logits(self.ctx.model(right), x, ("coarse",))["coarse"],
                self.f2c,
            )
        members = getattr(self.net, "members", None)
        if members is not None:
            mean = softmax(main, axis=1)
            each = [softmax(logits(m, x, (self.main,))[self.main], axis=1) for m in members]
            out["members"] = np.mean([total_variation(p, mean) for p in each], axis=0)
        return out


def evaluate_run(ctx: EvalContext, ev: Evaluated, names: list[str]) -> list[dict]:
    images = ctx.test_images(ev.seed)
    scorer = Scorer(ctx, ev)
    x = ctx.normalised(ev.run_id, images.raw)
    labels = images.labels(scorer.main)
    wrong = logits(scorer.net, x, (scorer.main,))[scorer.main].argmax(1) != labels
    mean, std = ctx.mean_std(ev.run_id)
    adv = adversarial(
        "pgd", HeadLogits(scorer.net, scorer.main), x, labels, ATTACK_EPS / 255, mean, std, ev.seed
    )
    corrupted = np.stack(
        [
            cached_corruption(images, names[i % len(names)], CORRUPTION_SEVERITY, ctx.data_dir)[i]
            for i in range(len(images.raw))
        ]
    )
    clean_scores = scorer.scores(x)
    others = {
        "adversarial": scorer.scores(adv),
        "corruption": scorer.scores(ctx.normalised(ev.run_id, corrupted)),
    }
    n = len(images.raw)
    rows = []
    for score, clean in clean_scores.items():
        rows.append(dict(task="error", score=score, auroc=auroc(wrong, clean), positives=int(wrong.sum())))
        for task, scored in others.items():
            positive = np.r_[np.zeros(n, bool), np.ones(n, bool)]
            rows.append(
                dict(task=task, score=score, auroc=auroc(positive, np.r_[clean, scored[score]]), positives=n)
            )
    base = dict(seed=ev.seed, model=ev.model, run=ev.run_id, head=scorer.main, images=n)
    return [{**base, **r} for r in rows]


def run(ctx: EvalContext, out: Path) -> Section:
    evaluated = ctx.with_heads()
    if not evaluated:
        raise EvaluationError("detection: the sweep has no finished run with a head; train some first")
    names = corruption_names()
    rows = []
    for i, ev in enumerate(evaluated, 1):
        log.info("detection %d/%d: %s", i, len(evaluated), ev.run_id)
        rows += evaluate_run(ctx, ev, names)
    table = pd.DataFrame(rows)
    write_atomic(out / "detection.csv", table.to_csv(index=False).encode())
    section = Section("Detecting errors, attacks and corruptions")
    section.add(
        "AUROC (0.5 = chance) of each score for telling misclassified clean test images from correct "
        f"ones (`error`, the main head: fine where there is one), PGD images (eps {ATTACK_EPS}/255 on the "
        "main head) from clean ones (`adversarial`), and corrupted images (each of the 15 corruptions "
        f"at severity {CORRUPTION_SEVERITY}, one per image in turn) from clean ones (`corruption`). "
        "msp = 1 - max softmax, energy = -logsumexp; hierarchy = disagreement of the net's coarse head "
        "with its fine head's parent classes; hemispheres = the same between the left and right "
        "hemispheres a specialised net is built from; members = the ensemble members' disagreement. "
        "Mean ± std over seeds; per seed: `detection.csv`.",
        "",
    )
    if ctx.independent_labels():
        section.add(
            "The fine and coarse labels are independent here: hierarchy and hemispheres scores do not apply.",
            "",
        )
    summary = (
        table.groupby(["model", "score", "task"], sort=False)["auroc"].agg(["mean", "std"]).reset_index()
    )
    summary["cell"] = [pm(m, s) for m, s in zip(summary["mean"], summary["std"], strict=True)]
    wide = summary.pivot(index=["model", "score"], columns="task", values="cell").reset_index()
    section.table(
        wide[["model", "score", *[t for t in TASKS if t in wide.columns]]].fillna("—"), numparse=False
    )
    section.compare_seeds(table, "auroc", ["task", "score"], "model", reference_model())
    section.figure(
        figures.detection_bars(table, out / "figures" / "detection.png"),
        "AUROC of each score, mean over seeds",
    )
    section.files.append(out / "detection.csv")
    return section
