"""Dataset readers, fold definitions and the few-shot episode sampler."""

from dinoseg.data.binary import BinaryClassDataset
from dinoseg.data.coco import CocoDataset
from dinoseg.data.episodes import Episode, EpisodeSampler, EpisodeSource
from dinoseg.data.folder import ClassInfo, FolderDataset, read_classes
from dinoseg.data.folds import (
    CAMVID_FOLDS,
    DEFAULT_FOLDER_FOLDS,
    DEFAULT_MIN_AREA,
    Fold,
    base_classes,
    benchmark_of,
    camvid_fold,
    coco_fold,
    dataset_fold,
    folder_folds,
    get_fold,
    is_present,
    min_pixels,
    novel_classes,
    pascal_fold,
    remap_for_training,
)
from dinoseg.data.open import open_dataset
from dinoseg.data.presence import MaskStats, default_cache_dir

__all__ = [
    "CAMVID_FOLDS",
    "DEFAULT_FOLDER_FOLDS",
    "DEFAULT_MIN_AREA",
    "BinaryClassDataset",
    "ClassInfo",
    "CocoDataset",
    "Episode",
    "EpisodeSampler",
    "EpisodeSource",
    "Fold",
    "FolderDataset",
    "MaskStats",
    "base_classes",
    "benchmark_of",
    "camvid_fold",
    "coco_fold",
    "dataset_fold",
    "default_cache_dir",
    "folder_folds",
    "get_fold",
    "is_present",
    "min_pixels",
    "novel_classes",
    "open_dataset",
    "pascal_fold",
    "read_classes",
    "remap_for_training",
]
