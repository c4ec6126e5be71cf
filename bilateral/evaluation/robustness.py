"""Adversarial robustness: FGSM and PGD (torchattacks), L-infinity, on every model of a sweep.

Each head is attacked on its own; a net with both heads is also attacked on their summed loss.
torchattacks computes one cross-entropy on one logit vector, and the summed loss is exactly that:
the "joint" logits z_fine[f] + z_coarse[c] over all (f, c) pairs have the log-softmax
log p_fine(f) + log p_coarse(c), so their cross-entropy at label (f, c) is CE_fine + CE_coarse.

The networks take normalised inputs; torchattacks is told the normalisation
(set_normalization_used), so it perturbs pixels in [0, 1] and eps is in pixel units (k/255).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from bilateral.analysis.report import Section, pm
from bilateral.evaluation import figures
from bilateral.evaluation.context import EvalContext, Evaluated, EvaluationError, accuracy, logits
from bilateral.extras import require
from bilateral.report import reference_model
from bilateral.store import write_atomic

log = logging.getLogger(__name__)
EPSILONS = (1, 2, 4, 8)  # L-infinity radius, in 1/255
PGD_STEPS = 10
PGD_STEP_SIZE = 2.5 / PGD_STEPS  # alpha = 2.5 eps / steps (Madry et al.), in units of eps
ATTACK_BATCH = 250


class HeadLogits(nn.Module):
    """One head's logits of a net that returns {head: logits}: what torchattacks attacks."""

    def __init__(self, net: nn.Module, head: str):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[self.head]


class JointLogits(nn.Module):
    """Logits over (fine, coarse) pairs whose cross-entropy is the sum of the two heads' (see above).
    Label of the pair (f, c): f * num_coarse + c."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return (out["fine"][:, :, None] + out["coarse"][:, None, :]).flatten(1)


def make_attack(name: str, model: nn.Module, eps: float, mean, std):
    """A torchattacks attack on a normalised-input model; eps in [0, 1] pixel units."""
    torchattacks = require("torchattacks", "the evaluation's adversarial attacks")
    if name == "fgsm":
        attack = torchattacks.FGSM(model, eps=eps)
    elif name == "pgd":
        attack = torchattacks.PGD(
            model, eps=eps, alpha=PGD_STEP_SIZE * eps, steps=PGD_STEPS, random_start=True
        )
    else:
        raise EvaluationError(f"unknown attack {name!r}: choose fgsm or pgd")
    attack.set_normalization_used(mean=list(mean), std=list(std))
    return attack


def attack_targets(net: nn.Module, heads: tuple[str, ...]) -> dict[str, nn.Module]:
    """{target: model}: each head alone, and both summed where there are both."""
    targets: dict[str, nn.Module] = {h: HeadLogits(net, h) for h in heads}
    if set(heads) == {"fine", "coarse"}:
        targets["summed"] = JointLogits(net)
    return targets


def target_labels(target: str, fine: np.ndarray, coarse: np.ndarray, num_coarse: int) -> np.ndarray:
    if target == "summed":
        return fine * num_coarse + coarse
    return fine if target == "fine" else coarse


def adversarial(
    attack_name: str, target_model: nn.Module, x: Tensor, labels: np.ndarray, eps: float, mean, std, seed: int
) -> Tensor:
    """Adversarial versions of the normalised batch x, in batches; PGD's random start drawn from seed."""
    torch.manual_seed(seed)
    target_model.eval()  # torchattacks restores the mode it finds: a fresh wrapper's train mode would
    # otherwise leave the net's BatchNorm and dropout training after the attack
    attack = make_attack(attack_name, target_model, eps, mean, std)
    y = torch.from_numpy(labels).to(x.device)
    return torch.cat(
        [attack(x[i : i + ATTACK_BATCH], y[i : i + ATTACK_BATCH]) for i in range(0, len(x), ATTACK_BATCH)]
    )


def evaluate_run(ctx: EvalContext, ev: Evaluated) -> list[dict]:
    """Robust accuracy of every head under every attack, target and eps, for one run."""
    images = ctx.test_images(ev.seed)
    net = ctx.model(ev.run_id)
    mean, std = ctx.mean_std(ev.run_id)
    x = ctx.normalised(ev.run_id, images.raw)
    num_coarse = ctx.data(ev.run_id).num_coarse
    clean = logits(net, x, ev.heads)
    rows = [
        dict(attack="none", target="none", eps=0, head=h, acc=accuracy(clean[h], images.labels(h)))
        for h in ev.heads
    ]
    for target, model in attack_targets(net, ev.heads).items():
        y = target_labels(target, images.fine, images.coarse, num_coarse)
        for attack_name in ("fgsm", "pgd"):
            for k in EPSILONS:
                adv = adversarial(attack_name, model, x, y, k / 255, mean, std, seed=ev.seed)
                z = logits(net, adv, ev.heads)
                for h in ev.heads:
                    rows.append(
                        dict(
                            attack=attack_name,
                            target=target,
                            eps=k,
                            head=h,
                            acc=accuracy(z[h], images.labels(h)),
                        )
                    )
    base = dict(seed=ev.seed, model=ev.model, run=ev.run_id, images=len(images.raw))
    return [{**base, **r} for r in rows]


def run(ctx: EvalContext, out: Path) -> Section:
    evaluated = ctx.with_heads()
    if not evaluated:
        raise EvaluationError(
            "adversarial robustness: the sweep has no finished run with a head; train some first"
        )
    rows = []
    for i, ev in enumerate(evaluated, 1):
        log.info("robustness %d/%d: %s", i, len(evaluated), ev.run_id)
        rows += evaluate_run(ctx, ev)
    table = pd.DataFrame(rows)
    write_atomic(out / "robustness.csv", table.to_csv(index=False).encode())
    section = Section("Adversarial robustness")
    section.add(
        f"FGSM and PGD (torchattacks), L-infinity, eps in {{{', '.join(map(str, EPSILONS))}}}/255 on "
        "pixels in "
        f"[0, 1] (the nets' normalisation is applied after the perturbation). PGD: {PGD_STEPS} steps of "
        f"{PGD_STEP_SIZE:g} eps, random start. Each head is attacked on its own; two-headed nets also on "
        f"the sum of both heads' losses (`summed`). {table['images'].iloc[0]} test images per seed. Test "
        "accuracy of each head under each attack, mean ± std over seeds; per seed: `robustness.csv`.",
        "",
    )
    pgd_own = table[(table.attack == "none") | ((table.attack == "pgd") & (table.target == table["head"]))]
    shown = _pivot(pgd_own)
    section.table(shown, numparse=False)
    section.compare_seeds(pgd_own, "acc", ["head", "eps"], "model", reference_model())
    summed = table[(table.attack == "pgd") & (table.target == "summed")]
    if len(summed):
        section.add("PGD on the summed loss of both heads:", "")
        section.table(_pivot(summed), numparse=False)
    section.figure(
        figures.robustness_curves(table, out / "figures" / "robustness.png"),
        "Accuracy against eps (PGD on each head itself; dashed: FGSM)",
    )
    section.files.append(out / "robustness.csv")
    return section


def _pivot(table: pd.DataFrame) -> pd.DataFrame:
    """model x head rows, one column per eps (clean first): mean ± std over seeds."""
    grouped = table.groupby(["model", "head", "eps"], sort=False)["acc"].agg(["mean", "std"]).reset_index()
    grouped["cell"] = [pm(m, s) for m, s in zip(grouped["mean"], grouped["std"], strict=True)]
    wide = grouped.pivot(index=["model", "head"], columns="eps", values="cell").reset_index()
    wide.columns = ["model", "head", *[("clean" if c == 0 else f"eps {c}/255") for c in wide.columns[2:]]]
    return wide.fillna("—")
