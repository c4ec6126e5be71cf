"""Fused training of K same-shape models equals training them apart (CPU, float32)."""

import pytest
import torch

from bilateral.errors import ConfigError
from bilateral.models import UnilateralNet, build_backbone
from bilateral.models.fused import fuse, split_outputs, stack_inputs, unfuse
from bilateral.train import loss_fn

TOL = dict(rtol=1e-4, atol=1e-5)  # float sums run in another order in the grouped kernels


def nets(backbone: str, k: int) -> list[UnilateralNet]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(UnilateralNet(build_backbone(backbone, width=0.125), 20, 4, dropout=0.0))
    return out


def batches(k: int, b: int = 8):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(b, 3, 32, 32, generator=g) for _ in range(k)]
    fines = [torch.randint(0, 20, (b,), generator=g) for _ in range(k)]
    return xs, fines, [f // 5 for f in fines]


@pytest.mark.parametrize("backbone", ["resnet9", "vgg11"])
def test_fused_forward_equals_separate(backbone):
    models = nets(backbone, 3)
    fused = fuse(models)
    xs, _, _ = batches(3)
    for mode in (True, False):  # batch statistics and running statistics
        fused.train(mode)
        for m in models:
            m.train(mode)
        together = split_outputs(fused(stack_inputs(xs)), 3)
        for k, (m, x) in enumerate(zip(models, xs, strict=True)):
            apart = m(x)
            for head in ("fine", "coarse"):
                torch.testing.assert_close(together[head][k], apart[head], **TOL)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_training_equals_separate_training(optimizer):
    k, steps = 2, 3
    models = nets("resnet9", k)
    fused = fuse(models)

    def make(params):
        if optimizer == "adam":  # eps: Adam's first step turns a 1e-9 gradient into +-lr, so a rounding
            # difference in a near-zero gradient would flip a whole step; a larger eps keeps it linear there
            return torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4, eps=1e-3)
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    opt_fused, opts = make(fused.parameters()), [make(m.parameters()) for m in models]
    for step in range(steps):
        xs, fines, coarses = batches(k, b=8 + step)
        outputs = split_outputs(fused(stack_inputs(xs)), k)
        loss = sum(
            loss_fn({h: z[i] for h, z in outputs.items()}, fines[i], coarses[i], 0.0) for i in range(k)
        )
        opt_fused.zero_grad()
        loss.backward()
        opt_fused.step()
        for m, opt, x, f, c in zip(models, opts, xs, fines, coarses, strict=True):
            opt.zero_grad()
            loss_fn(m(x), f, c, 0.0).backward()
            opt.step()
    for m, state in zip(models, unfuse(fused, models[0], k), strict=True):
        for key, value in m.state_dict().items():  # weights and BatchNorm running statistics
            torch.testing.assert_close(state[key], value, **TOL, msg=key)


def test_unfused_state_loads_strictly():
    models = nets("resnet9", 2)
    states = unfuse(fuse(models), models[0], 2)
    for m, state in zip(models, states, strict=True):
        m.load_state_dict(state, strict=True)


def test_different_architectures_refused():
    a = UnilateralNet(build_backbone("resnet9", width=0.125), 20, 4)
    b = UnilateralNet(build_backbone("resnet9", width=0.25), 20, 4)
    with pytest.raises(ConfigError, match="same architecture"):
        fuse([a, b])
