"""CIFAR-10 (offline JPEG copy) with the two coarse hierarchies described in its README."""

from __future__ import annotations

from pathlib import Path

from bilateral.data.folders import read_image_tree, resolve_source
from bilateral.data.hierarchy import HierarchicalDataset

ARCHIVE = "cifar10-jpg.tar.gz"

COARSE_MAPS: dict[str, dict[str, list[str]]] = {
    "cifar10-hier": {
        "vehicle": ["airplane", "automobile", "ship", "truck"],
        "animal": ["bird", "cat", "deer", "dog", "frog", "horse"],
    },
    "cifar10-hier4": {
        "air_sea_vehicle": ["airplane", "ship"],
        "road_vehicle": ["automobile", "truck"],
        "mammal": ["cat", "deer", "dog", "horse"],
        "other_animal": ["bird", "frog"],
    },
}


def load_cifar10(name: str, path: Path, cache_dir: Path) -> HierarchicalDataset:
    """`name` is a key of COARSE_MAPS; `path` the archive, its folder or an unpacked tree."""
    tree = read_image_tree(resolve_source(path, ARCHIVE), cache_dir)
    return tree.to_dataset(name, COARSE_MAPS[name])
