"""CIFAR-100 from the original `cifar-100-python` pickles, with both label levels as published.

The fine -> coarse map is derived from the files' own fine_labels and coarse_labels rather than
typed in here, and is checked to be a function, so a damaged or altered copy cannot slip through.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bilateral.data.hierarchy import HierarchicalDataset, HierarchicalSplit
from bilateral.errors import DataError

FOLDER = "cifar-100-python"
# The md5 sums torchvision.datasets.CIFAR100 checks for the official files.
OFFICIAL_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}


def load_cifar100(path: Path, verify_md5: bool = True) -> HierarchicalDataset:
    """Read `path`, which is a cifar-100-python folder or a folder containing one."""
    folder = locate_cifar100(path)
    if verify_md5:
        for name, official in OFFICIAL_MD5.items():
            _check_md5(folder / name, official)
    meta = _unpickle(folder / "meta")
    fine_names = [str(n) for n in _field(meta, "fine_label_names", folder / "meta")]
    coarse_names = [str(n) for n in _field(meta, "coarse_label_names", folder / "meta")]
    train = _read_split(folder / "train", len(fine_names), len(coarse_names))
    test = _read_split(folder / "test", len(fine_names), len(coarse_names))
    return HierarchicalDataset(
        name="cifar100",
        train=train,
        test=test,
        fine_names=fine_names,
        coarse_names=coarse_names,
        fine_to_coarse=_derive_fine_to_coarse(folder, train, test, fine_names, coarse_names),
    )


def download_cifar100(cache_dir: Path, verify_md5: bool = True) -> HierarchicalDataset:
    """Download CIFAR-100 into cache_dir through torchvision (unless already there), then read it."""
    folder = Path(cache_dir) / FOLDER
    if not all((folder / name).is_file() for name in OFFICIAL_MD5):
        try:
            from torchvision.datasets import CIFAR100

            CIFAR100(root=str(cache_dir), download=True)
        except Exception as exc:  # network, HTTP, integrity and import failures all end here
            raise DataError(
                f"could not download CIFAR-100 into {cache_dir} ({type(exc).__name__}: {exc}). "
                f"Fix: on a machine without internet, copy a {FOLDER} folder here and use the spec "
                f"'cifar100:<path to it>'."
            ) from exc
    return load_cifar100(folder, verify_md5)


def locate_cifar100(path: Path) -> Path:
    folder = path / FOLDER if (path / FOLDER).is_dir() else path
    missing = [name for name in OFFICIAL_MD5 if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: {', '.join(missing)} missing; expected a {FOLDER} folder holding train, "
            "test and meta, or a folder containing one. Fix: correct the path in the spec "
            "cifar100:<path>, or copy the complete folder again."
        )
    return folder


def _check_md5(file: Path, official: str) -> None:
    h = hashlib.md5()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != official:
        raise DataError(
            f"{file}: md5 {h.hexdigest()} differs from the official CIFAR-100 md5 {official}, so "
            "this is not the official copy or it is damaged. Fix: re-download it (or copy an "
            "official cifar-100-python again), or set data.verify_md5=false to accept a "
            "non-official copy."
        )


def _unpickle(file: Path) -> dict[str, Any]:
    try:
        with open(file, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # the official files are Python 2 pickles
    except Exception as exc:  # a damaged pickle can fail in almost any way
        raise DataError(
            f"{file}: cannot be read as a CIFAR-100 pickle ({type(exc).__name__}: {exc}); it is "
            "damaged. Fix: copy or download it again."
        ) from exc
    if not isinstance(entry, dict):
        raise DataError(f"{file}: holds a {type(entry).__name__}, not a dict. Fix: copy it again.")
    return entry


def _field(entry: dict[str, Any], key: str, file: Path) -> Any:
    if key not in entry:
        raise DataError(f"{file}: has no '{key}' entry, so it is not a CIFAR-100 file. Fix: copy it again.")
    return entry[key]


def _read_split(file: Path, num_fine: int, num_coarse: int) -> HierarchicalSplit:
    entry = _unpickle(file)
    data = np.asarray(_field(entry, "data", file), dtype=np.uint8)
    fine = np.asarray(_field(entry, "fine_labels", file), dtype=np.int64)
    coarse = np.asarray(_field(entry, "coarse_labels", file), dtype=np.int64)
    if data.size % 3072 or not len(data) == len(fine) == len(coarse):
        raise DataError(
            f"{file}: {data.shape} image data, {len(fine)} fine and {len(coarse)} coarse labels "
            "do not match (expected N rows of 3072 bytes and N labels of each). "
            "Fix: copy it again."
        )
    for level, labels, count in (("fine", fine, num_fine), ("coarse", coarse, num_coarse)):
        if labels.size and (labels.min() < 0 or labels.max() >= count):
            raise DataError(
                f"{file}: {level} labels fall outside the {count} {level} names in meta. "
                "Fix: copy the folder again."
            )
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return HierarchicalSplit(images=images, fine=fine, coarse=coarse)


def _derive_fine_to_coarse(
    folder: Path,
    train: HierarchicalSplit,
    test: HierarchicalSplit,
    fine_names: list[str],
    coarse_names: list[str],
) -> np.ndarray:
    """The coarse class of each fine class, as the labels themselves say."""
    fine = np.concatenate([train.fine, test.fine])
    coarse = np.concatenate([train.coarse, test.coarse])
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    fine_to_coarse = np.full(len(fine_names), -1, dtype=np.int64)
    for f, c in pairs:
        if fine_to_coarse[f] >= 0:
            raise DataError(
                f"{folder}: the coarse labels are not a function of the fine labels: fine class "
                f"'{fine_names[f]}' appears with coarse classes '{coarse_names[fine_to_coarse[f]]}' "
                f"and '{coarse_names[c]}'. Fix: the copy is damaged or altered; copy it again."
            )
        fine_to_coarse[f] = c
    absent = [fine_names[f] for f in np.flatnonzero(fine_to_coarse < 0)]
    if absent:
        raise DataError(
            f"{folder}: fine classes {absent} have no samples, so their coarse class is unknown. "
            "Fix: the copy is incomplete; copy it again."
        )
    return fine_to_coarse
