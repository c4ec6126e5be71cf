"""Specialisation without labels: the SimCLR hemisphere, the k-means hemisphere, the fine-fine
bilateral net, and the linear probes that say what each hemisphere's features separate."""

import json

import numpy as np
import pandas as pd
import torch

from bilateral.analysis import run_analysis
from bilateral.analysis.probes import probe_accuracy
from bilateral.data import DeviceLoader, LoaderOptions, load_dataset, stratified_subset
from bilateral.models import build_backbone
from bilateral.models.ssl import SimCLRNet, random_views
from tests.conftest import CIFAR10_JPG, REPO, navon_comparison


def test_views_change_every_image_differently_and_repeat_with_the_same_generator():
    x = torch.randn(8, 3, 32, 32)
    a, b = random_views(x), random_views(x)
    assert a.shape == x.shape and not torch.allclose(a, b)
    assert all((a[i] - x[i]).abs().mean() > 0.05 for i in range(8))
    same = [random_views(x, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(*same)


def test_the_simclr_loss_falls_on_real_cifar10_images():
    data = load_dataset(f"cifar10-hier:{CIFAR10_JPG}", cache_dir=str(REPO / "data"))
    train = stratified_subset(data.train.fine, 512, seed=0)
    val = stratified_subset(data.test.fine, 256, seed=0)
    mean, std = data.mean_std()
    torch.manual_seed(0)
    net = SimCLRNet(build_backbone("resnet9", width=0.125))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    def val_loss() -> float:
        net.eval()
        opts = LoaderOptions(256, torch.device("cpu"), mean, std, train=False)
        with torch.no_grad():
            return float(next(iter(net(x)["loss"] for x, _, _ in DeviceLoader(data.test, val, opts))))

    before = val_loss()
    opts = LoaderOptions(128, torch.device("cpu"), mean, std, train=True, seed=0)
    loader = DeviceLoader(data.train, train, opts)
    for epoch in range(4):
        loader.set_epoch(epoch)
        net.train()
        for x, _, _ in loader:
            loss = net(x)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = val_loss()
    assert after < before - 0.3, (before, after)  # no label was read


def test_probe_accuracy_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    separable = rng.normal(size=(200, 8)) + 3 * np.eye(8)[labels]
    assert probe_accuracy(separable, labels) > 0.95
    assert probe_accuracy(rng.normal(size=(200, 8)), labels) < 0.45


def test_the_unsupervised_comparison_on_navon_gives_a_row_per_comparison_row_and_its_probes(tmp_path):
    navon_comparison(tmp_path, "unsupervised")
    runs = tmp_path / "t" / "runs"

    def record(pattern: str) -> dict:
        return json.loads(next(runs.glob(f"{pattern}/record.json")).read_text())

    ssl, clusters = record("hemisphere-ssl-*"), record("hemisphere-clusters-*")
    assert "test_acc_fine" not in ssl and ssl["val_score"] == -ssl["val_loss_model"]
    assert "test_acc_coarse" not in clusters and 0 <= clusters["test_acc_relabelled"] <= 1
    assert clusters["relabelled"].endswith(f"k-means clusters of {clusters['spec']['depends_on'][0]})")
    assert clusters["data_fingerprint"] == ssl["data_fingerprint"]  # the source's, for the analysis
    agreement = json.loads(next(runs.glob("hemisphere-clusters-*/clusters.json")).read_text())
    assert 0 <= agreement["train_nmi_coarse"] <= 1
    fine_fine = record("fine-fine-local-vit-*")
    assert [d.split("-s0-")[0] for d in fine_fine["spec"]["depends_on"]] == [
        "hemisphere-fine-resnet9",
        "hemisphere-fine-vit-small",
    ]

    result = run_analysis(tmp_path / "t", device="cpu", data_dir=str(REPO / "data"), parts=["probes"])
    assert result.errors == {}, result.errors
    probes = pd.read_csv(result.out / "probes.csv")
    sides = set(zip(probes["model"], probes["hemisphere"], probes["backbone"], strict=True))
    assert {("hemisphere-ssl", "right", "resnet9"), ("fine-fine-local-vit", "right", "vit-small")} <= sides
    assert probes[["probe_fine", "probe_coarse"]].notna().all().all()
    assert ((probes["probe_fine"] >= 0) & (probes["probe_fine"] <= 1)).all()
    # a specialised net's hemispheres are the hemisphere runs themselves: the same probe scores
    spec_right = probes[(probes["model"] == "bilateral-specialised") & (probes["hemisphere"] == "right")]
    alone = probes[probes["model"] == "hemisphere-coarse"]
    assert np.allclose(spec_right["probe_coarse"].to_numpy(), alone["probe_coarse"].to_numpy())


def _ntxent_rank(rank: int, port: int, z: torch.Tensor, out: str) -> None:
    """One gloo rank: NT-Xent of its half of the projections, and their gradient."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    n = len(z) // 2 // 2  # images per rank; z holds [view 1 of all images; view 2 of all images]
    half = len(z) // 2
    mine = torch.cat([z[rank * n : (rank + 1) * n], z[half + rank * n : half + (rank + 1) * n]])
    mine = mine.clone().requires_grad_(True)
    criterion = SimCLRNet(build_backbone("resnet9", width=0.125)).criterion
    loss = criterion(mine[:n], mine[n:])
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": mine.grad}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_simclr_under_ddp_contrasts_each_image_with_the_whole_global_batch(tmp_path):
    """Two ranks with half a batch each give the one-process loss of the whole batch (the mean of
    their losses) and its gradient (DDP averages the ranks' gradients): without gathering each rank
    would contrast its own half only."""
    import multiprocessing

    from ray_jobs.cluster import free_port

    torch.manual_seed(0)
    images = 8
    z = torch.randn(2 * images, 16)  # [view 1; view 2] of 8 images
    whole = z.clone().requires_grad_(True)
    criterion = SimCLRNet(build_backbone("resnet9", width=0.125)).criterion
    loss = criterion(whole[:images], whole[images:])
    loss.backward()

    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ranks = [ctx.Process(target=_ntxent_rank, args=(r, port, z, str(tmp_path))) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(60)
        assert p.exitcode == 0
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.allclose((parts[0]["loss"] + parts[1]["loss"]) / 2, loss.detach(), atol=1e-5)
    n = images // 2
    for r, part in enumerate(parts):  # each rank's gradient of its own rows, averaged over 2 ranks
        expected = torch.cat(
            [whole.grad[r * n : (r + 1) * n], whole.grad[images + r * n : images + (r + 1) * n]]
        )
        assert torch.allclose(part["grad"] / 2, expected, atol=1e-6)
