"""Backbones that differ in receptive field at about equal parameter count, and their profiles."""

import json

import pandas as pd
import pytest
import torch

from bilateral.models import build_backbone, count_parameters
from bilateral.models.profile import profile_backbone
from bilateral.plan import build_plan
from tests.conftest import navon_comparison, tiny_config

SUBSTRATES = ("resnet9", "resnet9-dilated", "vit-small")


@pytest.mark.parametrize("name", SUBSTRATES)
@pytest.mark.parametrize("size", [32, 64])
def test_every_substrate_maps_any_image_size_to_its_features(name, size):
    backbone = build_backbone(name, width=0.125)
    assert backbone(torch.randn(2, 3, size, size)).shape == (2, backbone.out_dim)


def test_parameter_counts_match_at_the_paper_width_and_the_cpu_width():
    for width in (1.0, 0.125):
        counts = {name: count_parameters(build_backbone(name, width)) for name in SUBSTRATES}
        assert counts["resnet9-dilated"] == counts["resnet9"]  # the same layers, dilated
        assert abs(counts["vit-small"] / counts["resnet9"] - 1) < 0.05
    assert count_parameters(build_backbone("resnet9", 1.0)) == 6_568_000
    assert count_parameters(build_backbone("vit-small", 1.0)) == 6_347_520


def test_the_vit_is_timms_network_with_its_own_forward():
    vit = build_backbone("vit-small", width=0.125).eval()
    x = torch.randn(3, 3, 32, 32)
    timm_features = vit.vit.forward_head(vit.vit.forward_features(x), pre_logits=True)
    assert torch.allclose(vit(x), timm_features, atol=1e-6)
    maps = []
    hook = vit.gradcam_layers[0].register_forward_hook(lambda m, i, o: maps.append(o))
    vit(x)
    hook.remove()
    assert maps[0].shape == (3, vit.out_dim, 8, 8)  # a (B, C, H, W) map Grad-CAM can read


def test_profiles_tell_the_local_substrate_from_the_global_ones():
    local, dilated, vit = (profile_backbone(name, 0.125, 64) for name in SUBSTRATES)
    assert local["params"] == dilated["params"] and local["flops"] == dilated["flops"]
    assert dilated["rf_effective_px"] > local["rf_effective_px"]
    assert local["rf_px"] < 64 <= dilated["rf_px"]  # ResNet-9's field stops short of a 64-px image
    assert vit["rf_px"] == 64  # attention from the first block: every unit sees every pixel
    assert abs(vit["flops"] / local["flops"] - 1) < 0.1


def test_a_vit_run_is_never_fused():
    (spec,) = build_plan(tiny_config("plan.backbone=vit-small", "plan.models=[hemisphere-fine]")).runs
    assert spec.fusion_key is None
    (cnn,) = build_plan(tiny_config("plan.models=[hemisphere-fine]")).runs
    assert cnn.fusion_key is not None


def test_the_substrate_comparison_on_navon_gives_a_row_per_comparison_row_and_its_analysis(tmp_path):
    from bilateral.analysis import run_analysis

    summary = navon_comparison(tmp_path, "substrate")
    hemispheres = summary[summary["model"] == "hemisphere-coarse"]
    assert set(hemispheres["backbone"]) == {"resnet9", "resnet9-dilated", "vit-small"}
    record = json.loads(
        next((tmp_path / "t" / "runs").glob("specialised-local-vit-*/record.json")).read_text()
    )
    assert set(record["substrates"]) == {"resnet9", "vit-small"}
    assert record["substrates"]["vit-small"]["rf_px"] == 32 and record["labels"] == "independent"
    assert "test_acc_coarse_from_fine" not in record

    parts = ["scenarios", "gradcam", "similarity", "attribution"]
    data_dir = tiny_config().data_dir
    result = run_analysis(tmp_path / "t", device="cpu", data_dir=data_dir, parts=parts, gradcam_images=40)
    assert result.errors == {} and result.done == parts
    report = result.report.read_text()
    assert "labels are independent" in report and "coarse-from-fine accuracy does not apply" in report
    spread = pd.read_csv(result.out / "gradcam_spread.csv")
    assert {"specialised-local-vit", "specialised-vit-local"} <= set(spread["source"])
