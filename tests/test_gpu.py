"""The CUDA fast path: no host sync per training step, the same batches and steps as on CPU, and
the bf16 / channels_last / fused / compiled variants training like the plain path. GPU-only:
skipped where CUDA is absent; `launch/gpu_check.sh` runs them on a lent GPU."""

import warnings

import numpy as np
import pytest
import torch

from bilateral.data.memory_loader import DeviceLoader, LoaderOptions
from bilateral.plan import build_plan
from bilateral.run_data import load_data, make_splits
from bilateral.store import SweepStore
from bilateral.training import run_group
from tests.conftest import REPO, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DATA_DIR = str(REPO / "data")


def count_syncs(fn) -> int:
    """How many times fn makes the host wait for the GPU (PyTorch's sync debug mode)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def unilateral_specs(*overrides: str, seeds: str = "[0]"):
    cfg = tiny_config(f"plan.seeds={seeds}", "plan.models=[unilateral]", *overrides)
    return build_plan(cfg).runs


def training_split():
    (spec,) = unilateral_specs()
    data = load_data(spec.data.source, DATA_DIR, True)
    return data, make_splits(data, spec).train


def test_every_sync_is_counted():
    values = torch.arange(3.0, device="cuda")
    assert count_syncs(lambda: [float(v) for v in values]) == 3
    assert count_syncs(lambda: values * 2) == 0


def test_training_batches_never_wait_for_the_gpu():
    data, train = training_split()
    mean, std = data.mean_std()
    loader = DeviceLoader(data.train, train, LoaderOptions(64, "cuda", mean, std, train=True, seed=3))
    loader.set_epoch(1)
    batches = []
    assert count_syncs(lambda: batches.extend(loader)) == 0
    assert len(batches) == len(train) // 64


def test_batches_on_the_gpu_equal_those_on_the_cpu():
    """Order and augmentation come from a CPU generator: a run's data does not depend on the device."""
    data, train = training_split()
    mean, std = data.mean_std()
    for device in ("cpu", "cuda"):
        loader = DeviceLoader(data.train, train, LoaderOptions(64, device, mean, std, train=True, seed=5))
        loader.set_epoch(2)
        if device == "cpu":
            expected = [(x, f) for x, f, _ in loader]
        else:
            for (x, f, _), (x_cpu, f_cpu) in zip(loader, expected, strict=True):
                torch.testing.assert_close(x.cpu(), x_cpu, rtol=0, atol=1e-6)
                assert torch.equal(f.cpu(), f_cpu)


@pytest.mark.parametrize("fuse", [1, 2])
def test_host_syncs_do_not_grow_with_the_steps_of_an_epoch(tmp_path, fuse):
    """Syncs per epoch (metrics, checkpoints, evaluation) are fine; per training step they are not:
    an epoch of twice the steps must sync exactly as often."""
    seeds = "[0,1]" if fuse == 2 else "[0]"

    def syncs(train_images: int, name: str) -> int:
        specs = unilateral_specs(f"data.train_subset={train_images}", "train.epochs=1", seeds=seeds)
        store = SweepStore(tmp_path / name)
        return count_syncs(lambda: run_group(specs, store, device="cuda", data_dir=DATA_DIR))

    syncs(320, "warm-up")  # first-use work (cuDNN autotuning, handles) stays out of the comparison
    assert syncs(640, "short") == syncs(1280, "long")  # 10 vs 20 steps of 64


def test_cuda_steps_match_cpu_steps_with_the_fast_path_off(tmp_path):
    """fp32 on CUDA (TF32 off) trains the same network as on CPU: two epochs' records agree.
    Dropout is off (the two devices' generators draw different masks), and only learned weights are
    compared (BatchNorm's running statistics would dominate the norm)."""
    (spec,) = unilateral_specs("train.epochs=2", "optim.name=sgd", "optim.lr=0.05", "model.dropout=0.0")
    torch.backends.cudnn.allow_tf32 = False
    try:
        records = {
            dev: run_group([spec], SweepStore(tmp_path / dev), device=dev, data_dir=DATA_DIR)[0]
            for dev in ("cpu", "cuda")
        }
    finally:
        torch.backends.cudnn.allow_tf32 = True
    cpu, cuda = records["cpu"], records["cuda"]
    assert cuda["device"] != "cpu"
    weights = {
        dev: torch.cat([p.flatten().float() for k, p in SweepStore(tmp_path / dev).run(spec.run_id)
                        .load_checkpoint("last")["model"].items()
                        if p.is_floating_point() and "running_" not in k])
        for dev in ("cpu", "cuda")
    }  # fmt: skip
    drift = float((weights["cpu"] - weights["cuda"]).norm() / weights["cpu"].norm())
    assert drift < 1e-2, drift
    assert abs(cpu["val_acc_fine"] - cuda["val_acc_fine"]) < 0.05


def train_losses(tmp_path, *overrides: str) -> list[list[float]]:
    """Each member's training loss per epoch: two runs fused, 6 epochs (fp32 on CPU: member 0
    4.71 -> 3.84, member 1 4.66 -> 2.75)."""
    specs = unilateral_specs("train.epochs=6", *overrides, seeds="[0,1]")
    store = SweepStore(tmp_path)
    for record in run_group(specs, store, device="cuda", data_dir=DATA_DIR):
        assert record["device"] != "cpu"
        compiled = "train.compile=true" in overrides
        assert record["compile_fallbacks"] == ([] if compiled else None)  # nothing left eager
    return [[m["train_loss"] for m in store.run(s.run_id).read_metrics()] for s in specs]


@pytest.mark.parametrize(
    "fast",
    [
        ["train.bf16=true", "train.channels_last=true"],
        ["train.bf16=true", "train.channels_last=true", "train.compile=true"],
    ],
    ids=["bf16+channels_last", "compile"],
)
def test_fast_path_variants_train_like_the_plain_path(tmp_path, fast):
    plain = train_losses(tmp_path / "plain")
    for losses, reference in zip(train_losses(tmp_path / "fast", *fast), plain, strict=True):
        assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5
        assert abs(losses[-1] - reference[-1]) < 0.35, (losses, reference)  # bf16 rounding, not a bug


def test_a_full_width_bilateral_vgg11_trains_a_step_within_its_memory():
    """258,515,832 parameters (1 GB of fp32 weights): weights, Adam's two moments and the gradients
    are 4 GB; a step at batch 256 must fit in a few more, not in the card's whole memory."""
    from bilateral.models import BilateralNet, build_backbone, count_parameters

    dev = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(dev)
    net = BilateralNet(build_backbone("vgg11"), build_backbone("vgg11"), 100, 20, dropout=0.6).to(dev)
    assert count_parameters(net) == 258_515_832
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(256, 3, 32, 32, device=dev)
    for _ in range(2):
        out = net(x)
        loss = out["fine"].logsumexp(1).mean() + out["coarse"].logsumexp(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize(dev)
    peak_gb = torch.cuda.max_memory_allocated(dev) / 2**30
    print(f"bilateral vgg11 step, batch 256: peak {peak_gb:.2f} GiB")
    assert torch.isfinite(loss) and 3.0 < peak_gb < 8.0
