"""Fine classes held out of training, for measuring transfer to classes a net never saw.

`data.holdout_per_coarse = k` removes k fine classes of every coarse class from the dataset every
run trains, validates and is tested on (and so from the ensembles' pool); the held-out classes'
images, train and test, form a second dataset that only the evaluation's transfer part reads.
Which classes go is fixed by `data.split_seed`, so every run of a sweep holds out the same ones.
"""

from __future__ import annotations

import numpy as np

from bilateral.data.hierarchy import HierarchicalDataset, HierarchicalSplit
from bilateral.errors import ConfigError


def held_out_classes(data: HierarchicalDataset, per_coarse: int, seed: int) -> np.ndarray:
    """Sorted fine class indices held out: `per_coarse` of each coarse class, drawn with `seed`."""
    if per_coarse == 0:
        return np.empty(0, dtype=np.int64)
    if not data.hierarchical:
        raise ConfigError(
            f"data.holdout_per_coarse={per_coarse}: {data.name} has independent fine and coarse labels "
            "(no coarse class owns a fine class), so there is nothing to hold out per coarse class. "
            "Fix: use hierarchical data (cifar100, cifar10-hier4, synthetic) or set it to 0"
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for c, name in enumerate(data.coarse_names):
        members = np.flatnonzero(data.fine_to_coarse == c)
        if len(members) <= per_coarse:
            raise ConfigError(
                f"data.holdout_per_coarse={per_coarse} would hold out every fine class of coarse class "
                f"{name!r} ({len(members)} of them) in {data.name}, leaving its coarse head nothing to "
                f"learn. Fix: set it below {len(members)}"
            )
        chosen.append(rng.choice(members, per_coarse, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _select(data: HierarchicalDataset, classes: np.ndarray, suffix: str) -> HierarchicalDataset:
    """The images of these fine classes, fine labels renumbered 0..len(classes)-1 in class order."""
    renumber = np.full(data.num_fine, -1, dtype=np.int64)
    renumber[classes] = np.arange(len(classes))

    def split(s: HierarchicalSplit) -> HierarchicalSplit:
        keep = np.isin(s.fine, classes)
        return HierarchicalSplit(s.images[keep], renumber[s.fine[keep]], s.coarse[keep])

    assert data.fine_to_coarse is not None
    out = HierarchicalDataset(
        name=f"{data.name}{suffix}",
        train=split(data.train),
        test=split(data.test),
        fine_names=[data.fine_names[i] for i in classes],
        coarse_names=list(data.coarse_names),
        fine_to_coarse=data.fine_to_coarse[classes],
        flip_invariant=data.flip_invariant,
        val_pool=None if data.val_pool is None else data.val_pool[np.isin(data.train.fine, classes)],
    )
    out.validate()
    return out


def split_held_out(
    data: HierarchicalDataset, per_coarse: int, seed: int
) -> tuple[HierarchicalDataset, HierarchicalDataset | None]:
    """(what the runs see, the held-out classes' images or None when nothing is held out)."""
    held = held_out_classes(data, per_coarse, seed)
    if not len(held):
        return data, None
    kept = np.setdiff1d(np.arange(data.num_fine), held)
    tag = f"-holdout{per_coarse}s{seed}"
    return _select(data, kept, tag), _select(data, held, f"{tag}-heldout")


def without_held_out(data: HierarchicalDataset, per_coarse: int, seed: int) -> HierarchicalDataset:
    """The dataset runs train, validate and test on."""
    return split_held_out(data, per_coarse, seed)[0]
