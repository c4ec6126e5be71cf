"""summary.csv's FLOPs: what one model of a row cost to train (its dependencies included) and what
it costs per test image, against profile.py's count of the backbone."""

import pandas as pd
import pytest

from bilateral.config import load_config
from bilateral.cost import BACKWARD_PER_FORWARD
from bilateral.data.sources import class_counts
from bilateral.models.profile import profile_backbone
from bilateral.plan import build_plan
from bilateral.report import runs_table, summarize

TRAINED = 1_000  # images each run trained on


def records():
    cfg = load_config(
        "smoke", overrides=["plan.models=[unilateral,bilateral-specialised]", "plan.seeds=[0,1]"]
    )
    out = []
    for spec in build_plan(cfg).runs:
        out.append(
            {
                "run_id": spec.run_id,
                "model": spec.model_name,
                "backbone": spec.backbone_name,
                "seed": spec.seed,
                "member": spec.member,
                "test_acc_fine": 0.5,
                "test_acc_coarse": 0.6,
                "params": 1,
                "wall_time_s": 1.0,
                "image_size": 32,
                "train_images": TRAINED,
                "spec": spec.to_dict(),
            }
        )
    return out, cfg


def test_training_and_inference_flops_of_a_unilateral_resnet9_against_profile():
    recs, cfg = records()
    summary = summarize(runs_table(recs)).set_index("model")
    fine, coarse = class_counts(cfg.data.source)
    width = 512 * cfg.model.width  # the features the heads read
    backbone = profile_backbone("resnet9", cfg.model.width, 32)["flops"]
    heads = 2 * width * (fine + coarse)  # two Linear layers, 2 FLOPs per multiply-add
    forward = backbone + heads
    uni = summary.loc["unilateral"]
    assert uni["inference_flops"] == forward
    assert uni["train_flops"] == (1 + BACKWARD_PER_FORWARD) * forward * TRAINED  # forward + backward
    # the specialised net: its two hemispheres' training, then its own: frozen hemispheres forward
    # only, heads forward and backward
    hemisphere = (1 + BACKWARD_PER_FORWARD) * (backbone + 2 * width * fine) * TRAINED
    hemisphere_coarse = (1 + BACKWARD_PER_FORWARD) * (backbone + 2 * width * coarse) * TRAINED
    bilateral_heads = 2 * (2 * width) * (fine + coarse)
    own = (2 * backbone + (1 + BACKWARD_PER_FORWARD) * bilateral_heads) * TRAINED
    spec = summary.loc["bilateral-specialised"]
    assert spec["inference_flops"] == 2 * backbone + bilateral_heads
    assert spec["train_flops"] == pytest.approx(own + hemisphere + hemisphere_coarse)


def test_records_without_a_full_spec_have_no_flops():
    recs, _ = records()
    bare = [{**r, "spec": {"depends_on": []}} for r in recs]
    assert pd.isna(summarize(runs_table(bare))["train_flops"]).all()
