"""Hierarchical datasets (fine + coarse labels), splits, augmentation and on-device loading."""

from bilateral.data.augment import augment_batch, normalize
from bilateral.data.hierarchy import HierarchicalDataset, HierarchicalSplit, fine_to_coarse_from_map
from bilateral.data.memory_loader import DeviceLoader, LoaderOptions
from bilateral.data.sources import load_dataset
from bilateral.data.split import stratified_subset, validation_split

__all__ = [
    "DeviceLoader",
    "HierarchicalDataset",
    "HierarchicalSplit",
    "LoaderOptions",
    "augment_batch",
    "fine_to_coarse_from_map",
    "load_dataset",
    "normalize",
    "stratified_subset",
    "validation_split",
]
