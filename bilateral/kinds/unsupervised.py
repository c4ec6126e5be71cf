"""Specialisation without labels (experiments/unsupervised.yaml). Per seed:
  hemisphere-ssl       right backbone trained self-supervised (SimCLR), no labels     0
  hemisphere-clusters  right hemisphere trained on k-means clusters of the SSL        1  <- hemisphere-ssl
                       hemisphere's features instead of the coarse labels (k = number of coarse classes)
  bilateral-ssl        hemisphere-fine + hemisphere-ssl, frozen; heads trained        1  <- both
  bilateral-clusters   hemisphere-fine + hemisphere-clusters, frozen; heads trained   2  <- both
(bilateral-fine-fine, two fine hemispheres of different substrates, is a control: kinds/controls.py)
The bilateral rows' heads train and are tested on the true fine and coarse labels.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F

from bilateral.data import DeviceLoader, HierarchicalDataset, LoaderOptions
from bilateral.data.hierarchy import HierarchicalSplit
from bilateral.distributed import from_rank0, rank_and_world
from bilateral.errors import CheckpointError, ConfigError
from bilateral.kinds.bilateral_nets import Specialised
from bilateral.kinds.hemispheres import RightHemisphere
from bilateral.kinds.registry import Kind, register
from bilateral.models import build_backbone, load_state_strict
from bilateral.models.ssl import SimCLRNet

log = logging.getLogger(__name__)


def _backbone(spec):
    return build_backbone(spec.backbone, width=spec.model.width, bn_momentum=spec.model.bn_momentum)


class SelfSupervisedHemisphere(Kind):
    name, role, fusable = "hemisphere-ssl", "right", False
    how_to_get = "--experiment unsupervised --models hemisphere-ssl"

    def add_runs(self, row, seed, plan):
        return plan.add(self.name, plan.right, seed)

    def build(self, spec, num_fine, num_coarse):
        return SimCLRNet(_backbone(spec))

    def weight_decay(self, optim):
        return optim.hemisphere_weight_decay


class ClusterHemisphere(RightHemisphere):
    """The right hemisphere, with the coarse labels replaced by clusters found without labels."""

    name, fusable = "hemisphere-clusters", False  # each seed has its own clusters
    how_to_get = "--experiment unsupervised --models hemisphere-clusters (trains hemisphere-ssl first)"

    def add_runs(self, row, seed, plan):
        ssl = plan.row(SSL.name, seed)
        return plan.add(self.name, plan.right, seed, depends_on=(ssl.run_id,))

    def dataset(self, spec, store, data, device):
        if data.num_coarse < 2:
            raise ConfigError(
                f"{spec.run_id}: k-means needs k >= 2 clusters, {data.name} has one coarse class"
            )
        dep = store.run(spec.depends_on[0])
        if not dep.is_finished():
            raise CheckpointError(
                f"{spec.run_id} needs self-supervised run {dep.run_id}, which has not finished: rerun "
                "the sweep"
            )
        # rank 0 clusters and every DDP rank gets its labels: k-means on GPU features is not bitwise
        # reproducible across devices
        train, test = from_rank0(lambda: _cluster_labels(spec, dep, data, device))
        agreement = _agreement(data, train, test)
        if rank_and_world()[0] == 0:
            from bilateral.store import write_json  # bilateral.store imports the kinds

            write_json(store.run(spec.run_id).path("clusters.json"), agreement)
        log.info(
            "%s: %d k-means clusters vs the true coarse labels %s", spec.run_id, data.num_coarse, agreement
        )
        names = [f"cluster {c}" for c in range(data.num_coarse)]
        return dataclasses.replace(
            data,
            name=f"{data.name} (coarse = k-means clusters of {dep.run_id})",
            train=HierarchicalSplit(data.train.images, data.train.fine, train),
            test=HierarchicalSplit(data.test.images, data.test.fine, test),
            coarse_names=names,
            fine_to_coarse=None,
        )


@torch.no_grad()
def _cluster_labels(spec, dep, data: HierarchicalDataset, device) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k = number of coarse classes) on the SSL backbone's L2-normalised features of every
    training image (validation included: no label is read), then each test image's nearest centre."""
    from sklearn.cluster import KMeans

    net = SimCLRNet(_backbone(spec))
    load_state_strict(net, dep.load_checkpoint("best")["model"], source=str(dep.path("checkpoints/best.pt")))
    net.to(device).eval()
    mean, std = data.mean_std()

    def features(split) -> np.ndarray:
        opts = LoaderOptions(spec.train.eval_batch_size, device, mean, std, train=False)
        loader = DeviceLoader(split, np.arange(len(split)), opts)
        z = torch.cat([F.normalize(net.features(x).float(), dim=1).cpu() for x, _, _ in loader])
        return z.numpy()

    kmeans = KMeans(n_clusters=data.num_coarse, n_init=10, random_state=spec.init_seed % 2**31)
    train = kmeans.fit_predict(features(data.train)).astype(np.int64)
    return train, kmeans.predict(features(data.test)).astype(np.int64)


def _agreement(data: HierarchicalDataset, train: np.ndarray, test: np.ndarray) -> dict:
    """How far the clusters are from the true coarse labels: NMI and purity (1 = the same partition)."""
    from sklearn.metrics import normalized_mutual_info_score

    def purity(truth: np.ndarray, clusters: np.ndarray) -> float:
        return float(sum(np.bincount(truth[clusters == c]).max() for c in np.unique(clusters)) / len(truth))

    return {
        "train_nmi_coarse": float(normalized_mutual_info_score(data.train.coarse, train)),
        "train_purity_coarse": purity(data.train.coarse, train),
        "test_nmi_coarse": float(normalized_mutual_info_score(data.test.coarse, test)),
        "train_nmi_fine": float(normalized_mutual_info_score(data.train.fine, train)),
    }


class BilateralSSL(Specialised):  # a specialised net whose right hemisphere is another row's run
    name, right_row, colour, reference = "bilateral-ssl", "hemisphere-ssl", "tab:cyan", False
    how_to_get = "--experiment unsupervised --models bilateral-ssl"


class BilateralClusters(Specialised):
    name, right_row, colour, reference = "bilateral-clusters", "hemisphere-clusters", "tab:pink", False
    how_to_get = "--experiment unsupervised --models bilateral-clusters"


SSL = register(SelfSupervisedHemisphere())
CLUSTERS = register(ClusterHemisphere())
register(BilateralSSL())
register(BilateralClusters())
