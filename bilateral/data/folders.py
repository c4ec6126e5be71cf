"""Image-folder trees, unpacked or inside a tar archive: {train,test}/<fine class>/<image>.

The archive is streamed (never unpacked to disk) and the decoded arrays are cached as .npz,
keyed on the archive's sha256 or, for an unpacked tree, on every file's path, size and mtime.
Images are sorted by (class, path), so a tree and its archive decode to identical arrays.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bilateral.data.cache import load_or_build
from bilateral.data.hierarchy import HierarchicalDataset, fine_to_coarse_from_map, labels_to_split
from bilateral.errors import DataError

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CACHE_VERSION = "1"  # bump when decoding changes, so old cache files are not reused
_KEYS = ("class_names", "train_images", "train_fine", "test_images", "test_fine")

Entry = tuple[str, str, str, bytes]  # split, fine class, where (for messages), encoded image


@dataclass(eq=False)
class ImageTree:
    """Decoded images of both splits; fine labels index the sorted class-folder names."""

    class_names: list[str]
    train_images: np.ndarray
    train_fine: np.ndarray
    test_images: np.ndarray
    test_fine: np.ndarray

    def to_dataset(self, name: str, coarse_map: dict[str, list[str]]) -> HierarchicalDataset:
        """Attach coarse labels from a {coarse: [fine, ...]} map."""
        fine_to_coarse, coarse_names = fine_to_coarse_from_map(coarse_map, self.class_names)
        return HierarchicalDataset(
            name=name,
            train=labels_to_split(self.train_images, self.train_fine, fine_to_coarse),
            test=labels_to_split(self.test_images, self.test_fine, fine_to_coarse),
            fine_names=self.class_names,
            coarse_names=coarse_names,
            fine_to_coarse=fine_to_coarse,
        )


def resolve_source(path: Path, archive_name: str | None = None) -> Path:
    """The archive or unpacked tree that `path` designates (a folder may hold `archive_name`)."""
    expected = "a folder with train/ and test/ subfolders, or a .tar.gz of one"
    if archive_name:
        expected = f"{archive_name}, a folder holding it, or {expected}"
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder; expected {expected} there. "
            "Fix: correct the path in the dataset spec."
        )
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{path}: not an archive; expected {expected}. Fix: point the spec at one.")
        return path
    present = [split for split in SPLITS if (path / split).is_dir()]
    if len(present) == len(SPLITS):
        return path
    if archive_name and (path / archive_name).is_file():
        return path / archive_name
    if present:
        missing = [split for split in SPLITS if split not in present]
        raise DataError(
            f"{path}: the split folder {missing[0]}/ is missing. "
            "Fix: copy the complete dataset again (both train/ and test/)."
        )
    raise DataError(f"{path}: found none of {expected}. Fix: point the dataset spec at one.")


def read_image_tree(source: Path, cache_dir: Path) -> ImageTree:
    """Decode `source` (from resolve_source), through the .npz cache under cache_dir/cache."""
    stem = source.name
    for suffix in ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    cache_file = Path(cache_dir) / "cache" / f"{stem}-{_source_key(source)}.npz"
    arrays = load_or_build(cache_file, _KEYS, lambda: _decode(source))
    return ImageTree(
        class_names=[str(name) for name in arrays["class_names"]],
        train_images=arrays["train_images"],
        train_fine=arrays["train_fine"],
        test_images=arrays["test_images"],
        test_fine=arrays["test_fine"],
    )


def tree_class_names(source: Path) -> list[str] | None:
    """The fine classes of an unpacked tree from its folder names alone (train/<class>/ holding an
    image), for --dry-run; None for an archive, which only a full read would list."""
    if source.is_file():
        return None
    return sorted({fine for split, fine, _ in _tree_files(source) if split == "train"})


def read_coarse_map(path: Path) -> dict[str, list[str]]:
    """Read a {coarse: [fine, ...]} JSON file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path}: coarse map not found; expected a JSON object {{coarse: [fine, ...]}} there. "
            "Fix: correct the path in the spec folder:<root>:<coarse_map.json>."
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the coarse map ({exc}). Fix: make it valid JSON.") from exc
    valid = isinstance(data, dict) and all(
        isinstance(fines, list) and all(isinstance(f, str) for f in fines) for fines in data.values()
    )
    if not valid:
        raise DataError(
            f"{path}: the coarse map must be a JSON object {{coarse: [fine, ...]}} of strings. "
            "Fix: rewrite it in that form."
        )
    return data


def _source_key(source: Path) -> str:
    h = hashlib.sha256(CACHE_VERSION.encode())
    if source.is_file():
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        for split, fine, path in _tree_files(source):
            stat = path.stat()
            h.update(f"{split}/{fine}/{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _decode(source: Path) -> dict[str, np.ndarray]:
    entries = _archive_entries(source) if source.is_file() else _tree_entries(source)
    found: dict[str, list[tuple[str, str, np.ndarray]]] = {split: [] for split in SPLITS}
    for split, fine, where, data in entries:
        found[split].append((fine, where, _decode_image(data, where)))
    for split, items in found.items():
        if not items:
            raise DataError(
                f"{source}: no images under {split}/<class>/; the dataset is incomplete. "
                "Fix: copy it again from its source."
            )
    class_names = sorted({fine for fine, _, _ in found["train"]})
    test_classes = {fine for fine, _, _ in found["test"]}
    if test_classes != set(class_names):
        odd = sorted(test_classes.symmetric_difference(class_names))
        raise DataError(
            f"{source}: classes {odd} are missing from one of train/ and test/. "
            "Fix: copy the dataset again so both splits hold every class."
        )
    index = {name: i for i, name in enumerate(class_names)}
    arrays: dict[str, np.ndarray] = {"class_names": np.array(class_names)}
    for split, items in found.items():
        items.sort(key=lambda item: (item[0], item[1]))
        arrays[f"{split}_images"] = np.stack([image for _, _, image in items])
        arrays[f"{split}_fine"] = np.array([index[fine] for fine, _, _ in items], dtype=np.int64)
    return arrays


def _archive_entries(archive: Path) -> Iterator[Entry]:
    """Stream a .tar or .tar.gz; gzip's own CRC and length check catches any truncation."""
    try:
        with open(archive, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if not member.isfile() or len(parts) < 3 or parts[-3] not in SPLITS:
                        continue
                    if not parts[-1].lower().endswith(IMAGE_SUFFIXES) or parts[-1].startswith("."):
                        continue
                    f = tar.extractfile(member)
                    assert f is not None  # regular files always have contents
                    yield parts[-3], parts[-2], f"{archive} (member {member.name})", f.read()
            while stream.read(1 << 20):  # read to the end, where gzip checks CRC and length
                pass
    except Exception as exc:  # tarfile, gzip and zlib fail in many ways on a damaged archive
        raise DataError(
            f"{archive}: the archive is truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Fix: copy it again from its source and check its checksum."
        ) from exc


def _tree_entries(root: Path) -> Iterator[Entry]:
    for split, fine, path in _tree_files(root):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read this image ({exc}). Fix: replace the file.") from exc
        yield split, fine, str(path), data


def _tree_files(root: Path) -> Iterator[tuple[str, str, Path]]:
    for split in SPLITS:
        for class_dir in _visible(root / split):
            if not class_dir.is_dir():
                continue
            for path in _visible(class_dir):
                if path.name.lower().endswith(IMAGE_SUFFIXES):
                    yield split, class_dir.name, path


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if not e.name.startswith("."))
    except OSError as exc:
        raise DataError(
            f"{folder}: cannot list this folder ({exc}). "
            "Fix: check it exists and is readable, or copy the dataset again."
        ) from exc


def _decode_image(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{where}: cannot decode this image ({exc}). "
            "Fix: replace or delete the file, or copy the dataset again."
        ) from exc
    if rgb.size != (32, 32):
        raise DataError(
            f"{where}: image is {rgb.size[0]}x{rgb.size[1]}, expected 32x32. "
            "Fix: resize it to 32x32 or remove it from the dataset."
        )
    return np.asarray(rgb)
