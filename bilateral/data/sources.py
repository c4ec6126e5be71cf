"""Dataset specs ("name" or "name:argument") -> validated HierarchicalDataset."""

from __future__ import annotations

from pathlib import Path

from bilateral.data.cifar10 import COARSE_MAPS, load_cifar10
from bilateral.data.cifar100 import download_cifar100, load_cifar100
from bilateral.data.folders import read_coarse_map, read_image_tree, resolve_source
from bilateral.data.hierarchy import HierarchicalDataset
from bilateral.data.synthetic import make_synthetic
from bilateral.errors import ConfigError

SPECS = {
    "synthetic": "deterministic synthetic data, 4 coarse x 5 fine classes",
    "cifar10-hier:<path>": "CIFAR-10 JPEGs (cifar10-jpg.tar.gz, its folder or an unpacked tree), "
    "coarse vehicle / animal",
    "cifar10-hier4:<path>": "the same images with 4 coarse classes",
    "cifar100": "CIFAR-100 downloaded through torchvision into the cache dir",
    "cifar100:<path>": "CIFAR-100 from a local cifar-100-python folder (or its parent)",
    "folder:<root>:<coarse_map.json>": "image folders root/{train,test}/<fine class>/*.jpg|png "
    "(or a .tar.gz of them) with a {coarse: [fine, ...]} JSON map",
}


def load_dataset(spec: str, cache_dir: str | Path = "data", verify_md5: bool = True) -> HierarchicalDataset:
    """Load the dataset a spec names, check its consistency and return it.

    Decoded image datasets are cached under cache_dir/cache; CIFAR-100 downloads to cache_dir.
    """
    name, _, argument = spec.partition(":")
    cache_dir = Path(cache_dir)
    if name == "synthetic" and not argument:
        dataset = make_synthetic()
    elif name in COARSE_MAPS and argument:
        dataset = load_cifar10(name, Path(argument), cache_dir)
    elif name == "cifar100" and argument:
        dataset = load_cifar100(Path(argument), verify_md5)
    elif name == "cifar100":
        dataset = download_cifar100(cache_dir, verify_md5)
    elif name == "folder" and ":" in argument:
        root, coarse_map = argument.rsplit(":", 1)
        tree = read_image_tree(resolve_source(Path(root)), cache_dir)
        dataset = tree.to_dataset(f"folder:{Path(root).name}", read_coarse_map(Path(coarse_map)))
    else:
        raise ConfigError(_bad_spec(spec, name))
    dataset.validate()
    return dataset


def _bad_spec(spec: str, name: str) -> str:
    forms = [form for form in SPECS if form.split(":")[0] == name]
    if forms:
        return f"dataset spec '{spec}' is malformed. Fix: write it as {' or '.join(forms)}."
    known = "\n".join(f"  {form:34} {what}" for form, what in SPECS.items())
    return f"unknown dataset spec '{spec}'. Fix: use one of\n{known}"
