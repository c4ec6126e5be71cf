"""Models: exact sizes of the paper's networks, shapes, hemisphere freezing, strict checkpoint loading."""

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from bilateral.analysis.gradcam import hemisphere_maps
from bilateral.assemble import build_model
from bilateral.config import load_config
from bilateral.errors import CheckpointError, ConfigError
from bilateral.models import (
    BACKBONES,
    BilateralNet,
    Ensemble,
    ResNet9,
    UnilateralNet,
    build_backbone,
    count_parameters,
    load_state_strict,
)
from bilateral.models.cifar_resnet import BasicBlock
from bilateral.models.vgg import VGG11Features
from bilateral.plan import build_plan


def images(batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def small_bilateral(left: str = "resnet9", right: str = "resnet9") -> BilateralNet:
    torch.manual_seed(0)
    return BilateralNet(build_backbone(left, width=0.125), build_backbone(right, width=0.125), 10, 2)


def test_resnet9_has_the_authors_parameter_count() -> None:
    assert count_parameters(ResNet9()) == 6_568_000
    assert count_parameters(build_backbone("resnet9", width=0.25)) < 6_568_000 / 10


@pytest.mark.parametrize(("name", "expected"), [("resnet18", 11_230_392), ("resnet34", 21_338_552)])
def test_cifar_resnet_with_two_heads_has_the_paper_parameter_count(name: str, expected: int) -> None:
    assert count_parameters(UnilateralNet(build_backbone(name), 100, 20)) == expected


def test_vgg11_is_torchvision_vgg11_without_its_last_linear() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.vgg11(weights=None).eval()
    torch.manual_seed(0)
    ours = build_backbone("vgg11").eval()
    state, expected = ours.state_dict(), reference.state_dict()
    assert list(state) == [k for k in expected if not k.startswith("classifier.6.")]
    assert all(torch.equal(v, expected[k]) for k, v in state.items())  # torchvision's init too
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(reference.classifier[-1](ours(x)), reference(x))
    assert ours.out_dim == 4096 and count_parameters(VGG11Features()) == count_parameters(reference.features)


def test_narrow_vgg11_scales_the_classifier_and_keeps_torchvision_init() -> None:
    """CPU widths shrink the 25088 -> 4096 -> 4096 classifier with the convs; torchvision's VGG
    init: Kaiming normal (fan out) convs, N(0, 0.01) linears, zero biases."""
    torch.manual_seed(0)
    net = build_backbone("vgg11", width=0.5)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256 * 49, 2048), (2048, 2048)]
    assert net.out_dim == 2048 and net(images(2)).shape == (2, 2048)
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            std = 0.01 if isinstance(m, nn.Linear) else (2 / (9 * m.out_channels)) ** 0.5
            assert m.weight.std().item() == pytest.approx(std, rel=0.1) and not m.bias.any()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("hemisphere-fine", 128_766_336), ("unilateral", 129_257_976), ("bilateral-specialised", 258_515_832)],
)
def test_vgg11_nets_have_the_authors_parameter_counts(kind: str, expected: int) -> None:
    """CIFAR-100 (100 fine, 20 coarse classes) at the paper's width; a hemisphere's backbone alone."""
    plan = build_plan(load_config("paper", overrides=["plan.backbone=vgg11", "plan.seeds=[0]"]))
    spec = next(s for s in plan.runs if s.kind == kind and s.backbone == "vgg11")
    net = build_model(spec, 100, 20)
    assert count_parameters(net.backbone if kind == "hemisphere-fine" else net) == expected


def test_gradcam_of_a_vgg11_hemisphere_is_finite_and_varies() -> None:
    torch.manual_seed(0)
    maps = hemisphere_maps(UnilateralNet(build_backbone("vgg11", width=0.125), None, 20), images(4))
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all()
    assert (maps.reshape(4, -1).std(1) > 1e-3).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_maps_images_to_out_dim_features(name: str) -> None:
    backbone = build_backbone(name, width=0.25)
    assert backbone.out_dim == {"vit-small": 64, "vgg11": 1024}.get(name, 128)  # 256 and 4096 * width
    assert backbone(images(2)).shape == (2, backbone.out_dim)
    assert backbone.gradcam_layers and all(m in set(backbone.modules()) for m in backbone.gradcam_layers)


def test_full_width_features_are_512_d() -> None:
    assert ResNet9()(images(2)).shape == (2, 512)


def test_bn_momentum_reaches_every_batchnorm() -> None:
    bns = [
        m
        for m in build_backbone("resnet18", width=0.125, bn_momentum=0.9).modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    assert len(bns) == 1 + 2 * 8 + 3 and all(bn.momentum == 0.9 for bn in bns)


@pytest.mark.parametrize("kind", ["unilateral-resnet34", "bilateral-unspecialised"])
def test_zero_init_residual_starts_every_resnet_block_as_its_shortcut(kind: str) -> None:
    """ResNet-34's 16 blocks start as identities with the setting, and are random without it;
    ResNet-9 (the bilateral nets) has no such blocks and is built exactly as without it."""
    cfg = load_config("smoke", overrides=["plan.seeds=[0]", "plan.backbone=resnet9"])
    (spec,) = [
        s
        for s in build_plan(cfg).runs
        if s.model_name.startswith(kind.split("-resnet")[0])
        and (kind != "unilateral-resnet34" or s.backbone == "resnet34")
    ]
    assert spec.model.zero_init_residual  # the smoke preset's recipe
    off = dataclasses.replace(spec, model=dataclasses.replace(spec.model, zero_init_residual=False))
    torch.manual_seed(0)
    on_model = build_model(spec, 20, 4)
    torch.manual_seed(0)
    off_model = build_model(off, 20, 4)
    last_bns = [b.body[-1].weight for b in on_model.modules() if isinstance(b, BasicBlock)]
    assert len(last_bns) == (16 if kind == "unilateral-resnet34" else 0)
    assert all(float(w.abs().sum()) == 0 for w in last_bns)
    off_bns = [b.body[-1].weight for b in off_model.modules() if isinstance(b, BasicBlock)]
    assert all(float(w.abs().sum()) > 0 for w in off_bns)
    differs = [
        n
        for (n, a), b in zip(on_model.state_dict().items(), off_model.state_dict().values(), strict=True)
        if not torch.equal(a, b)
    ]
    assert len(differs) == len(last_bns)  # nothing else changes
    assert off.run_id != spec.run_id


def test_unknown_backbone_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="resnet9"):
        build_backbone("nope")


def test_unilateral_net_returns_only_its_heads() -> None:
    x = images(3)
    both = UnilateralNet(build_backbone("resnet9", width=0.125), 10, 2)
    assert {k: v.shape for k, v in both(x).items()} == {"fine": (3, 10), "coarse": (3, 2)}
    assert both.features(x).shape == (3, 64)
    assert set(UnilateralNet(build_backbone("resnet9", width=0.125), None, 2)(x)) == {"coarse"}
    with pytest.raises(ConfigError):
        UnilateralNet(build_backbone("resnet9", width=0.125), None, None)


def test_bilateral_net_concatenates_different_hemispheres() -> None:
    net = small_bilateral("resnet9", "vgg11").eval()
    x = images(3)
    out = net(x)
    assert {k: v.shape for k, v in out.items()} == {"fine": (3, 10), "coarse": (3, 2)}
    assert net.features(x).shape == (3, 64 + 512)
    assert torch.equal(net.features(x), torch.cat([net.left_features(x), net.right_features(x)], dim=1))
    assert torch.equal(out["fine"], net.heads["fine"](net.features(x)))


def test_ensemble_averages_member_logits() -> None:
    torch.manual_seed(0)
    members = [UnilateralNet(build_backbone("resnet9", width=0.125), 10, 2).eval() for _ in range(2)]
    x = images(3)
    out = Ensemble(members).eval()(x)
    a, b = members[0](x), members[1](x)
    assert not torch.allclose(a["fine"], b["fine"])
    for k in ("fine", "coarse"):
        torch.testing.assert_close(out[k], (a[k] + b[k]) / 2)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def bn_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def adam_step(net: BilateralNet) -> None:
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=1e-3)
    out = net(images(4))
    loss = nn.functional.cross_entropy(out["fine"], torch.tensor([0, 1, 2, 3])) + nn.functional.cross_entropy(
        out["coarse"], torch.tensor([0, 1, 0, 1])
    )
    loss.backward()
    optimizer.step()


def test_frozen_hemispheres_change_neither_weights_nor_bn_statistics() -> None:
    net = small_bilateral()
    net.freeze_hemispheres()
    net.train()
    assert not net.left.training and not net.right.training and net.heads.training
    before = {name: snapshot(getattr(net, name)) for name in ("left", "right", "heads")}
    adam_step(net)
    for name in ("left", "right"):
        after = getattr(net, name).state_dict()
        assert all(torch.equal(v, after[k]) for k, v in before[name].items()), name
    assert not torch.equal(before["heads"]["fine.linear.weight"], net.heads["fine"].linear.weight)
    assert not torch.equal(before["heads"]["coarse.linear.weight"], net.heads["coarse"].linear.weight)


def test_update_bn_stats_keeps_the_authors_running_statistics_but_not_weights() -> None:
    net = small_bilateral()
    net.freeze_hemispheres(update_bn_stats=True)
    net.train()
    assert net.left.training
    before = snapshot(net.left)
    adam_step(net)
    after = net.left.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if not bn_stat(k))
    assert all(not torch.equal(v, after[k]) for k, v in before.items() if bn_stat(k))


def test_load_state_strict_loads_a_matching_state() -> None:
    torch.manual_seed(0)
    source = UnilateralNet(build_backbone("resnet9", width=0.25), 10, 2)
    target = UnilateralNet(build_backbone("resnet9", width=0.25), 10, 2)
    load_state_strict(target, source.state_dict(), "runs/a/model.pt")
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())


@pytest.mark.parametrize(("name", "width"), [("resnet18", 1.0), ("resnet9", 0.5)])
def test_load_state_strict_rejects_another_architecture_or_width(name: str, width: float) -> None:
    target = UnilateralNet(build_backbone("resnet9"), 10, 2)
    state = UnilateralNet(build_backbone(name, width=width), 10, 2).state_dict()
    with pytest.raises(CheckpointError, match="runs/b/model.pt") as error:
        load_state_strict(target, state, "runs/b/model.pt")
    assert "delete that run's directory" in str(error.value)
