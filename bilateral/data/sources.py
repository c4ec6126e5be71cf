"""Dataset specs ("name" or "name:argument") -> validated HierarchicalDataset."""

from __future__ import annotations

from pathlib import Path

from bilateral.data.cifar10 import ARCHIVE, COARSE_MAPS, load_cifar10
from bilateral.data.cifar100 import download_cifar100, load_cifar100, locate_cifar100
from bilateral.data.folders import read_coarse_map, read_image_tree, resolve_source, tree_class_names
from bilateral.data.hierarchy import HierarchicalDataset, fine_to_coarse_from_map
from bilateral.data.navon import CLASSES as NAVON_CLASSES
from bilateral.data.navon import check_size, make_navon
from bilateral.data.synthetic import PATTERNS, TEXTURES, make_synthetic
from bilateral.errors import ConfigError

SPECS = {
    "synthetic": "deterministic synthetic data, 4 coarse x 5 fine classes",
    "cifar10-hier:<path>": "CIFAR-10 JPEGs (cifar10-jpg.tar.gz, its folder or an unpacked tree), "
    "coarse vehicle / animal",
    "cifar10-hier4:<path>": "the same images with 4 coarse classes",
    "cifar100": "CIFAR-100 downloaded through torchvision into the cache dir",
    "cifar100:<path>": "CIFAR-100 from a local cifar-100-python folder (or its parent)",
    "navon": "Navon figures of real handwritten digits, 32x32: local (fine) and global (coarse) "
    "digit, independent labels",
    "navon:<size>": "the same at size x size pixels (e.g. navon:64)",
    "folder:<root>:<coarse_map.json>": "image folders root/{train,test}/<fine class>/*.jpg|png "
    "(or a .tar.gz of them) with a {coarse: [fine, ...]} JSON map",
}


def load_dataset(spec: str, cache_dir: str | Path = "data", verify_md5: bool = True) -> HierarchicalDataset:
    """Load the dataset a spec names, check its consistency and return it.

    Decoded image datasets are cached under cache_dir/cache; CIFAR-100 downloads to cache_dir.
    """
    name, paths = _parse(spec)
    cache_dir = Path(cache_dir)
    if name == "synthetic":
        dataset = make_synthetic()
    elif name == "navon":
        dataset = make_navon(_navon_size(spec))
    elif name in COARSE_MAPS:
        dataset = load_cifar10(name, paths[0], cache_dir)
    elif name == "cifar100" and paths:
        dataset = load_cifar100(paths[0], verify_md5)
    elif name == "cifar100":
        dataset = download_cifar100(cache_dir, verify_md5)
    else:  # folder
        root, coarse_map = paths
        tree = read_image_tree(resolve_source(root), cache_dir)
        dataset = tree.to_dataset(f"folder:{root.name}", read_coarse_map(coarse_map))
    dataset.validate()
    return dataset


def check_dataset_spec(spec: str) -> None:
    """What --dry-run can say of a spec without decoding any image: its form is known and what it
    names exists in a form the loader reads (DataError or ConfigError otherwise)."""
    name, paths = _parse(spec)
    if name == "navon":
        _navon_size(spec)
    elif name in COARSE_MAPS:
        resolve_source(paths[0], ARCHIVE)
    elif name == "cifar100" and paths:
        locate_cifar100(paths[0])
    elif name == "folder":  # every fine class under exactly one coarse class
        classes = tree_class_names(resolve_source(paths[0]))
        coarse_map = read_coarse_map(paths[1])
        if classes is not None:
            fine_to_coarse_from_map(coarse_map, classes)


def class_counts(spec: str) -> tuple[int, int] | None:
    """(fine, coarse) class counts of a spec without decoding images; None when only the images
    tell (a folder tree's fine classes are its subfolders)."""
    name, paths = _parse(spec)
    if name == "synthetic":
        return len(TEXTURES) * len(PATTERNS), len(TEXTURES)
    if name == "navon":
        return NAVON_CLASSES, NAVON_CLASSES
    if name in COARSE_MAPS:
        return sum(len(f) for f in COARSE_MAPS[name].values()), len(COARSE_MAPS[name])
    if name == "cifar100":
        return 100, 20
    return None


def train_size_of(spec: str) -> int | None:
    """Training images of a spec's data (before the validation split) without decoding it; None
    where only the files tell."""
    name, _ = _parse(spec)
    return 50_000 if name in COARSE_MAPS or name == "cifar100" else None


def image_size_of(spec: str) -> int:
    """The image side of a spec's data without decoding it (every source but navon is 32x32)."""
    name, _ = _parse(spec)
    return _navon_size(spec) if name == "navon" else 32


def _parse(spec: str) -> tuple[str, list[Path]]:
    """(name, the paths it names) of a well-formed spec; ConfigError for any other."""
    name, _, argument = spec.partition(":")
    if name == "synthetic" and not argument:
        return name, []
    if name == "navon" and (not argument or argument.isdigit()):
        return name, []
    if name in COARSE_MAPS and argument:
        return name, [Path(argument)]
    if name == "cifar100":
        return name, [Path(argument)] if argument else []
    if name == "folder" and ":" in argument:
        root, coarse_map = argument.rsplit(":", 1)
        return name, [Path(root), Path(coarse_map)]
    raise ConfigError(_bad_spec(spec, name))


def _navon_size(spec: str) -> int:
    argument = spec.partition(":")[2]
    size = int(argument) if argument else 32
    check_size(size)
    return size


def _bad_spec(spec: str, name: str) -> str:
    forms = [form for form in SPECS if form.split(":")[0] == name]
    if forms:
        return f"dataset spec '{spec}' is malformed. Fix: write it as {' or '.join(forms)}."
    known = "\n".join(f"  {form:34} {what}" for form, what in SPECS.items())
    return f"unknown dataset spec '{spec}'. Fix: use one of\n{known}"
