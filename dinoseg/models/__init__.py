"""Few-shot segmentation models on frozen DINOv2 features."""

from dinoseg.models.build import (
    SEGMENTER_REGISTRY,
    SERVED_ARCH,
    build_segmenter,
    count_parameters,
)
from dinoseg.models.fsdino import FSDINOSegmenter, SegmenterConfig

__all__ = [
    "SEGMENTER_REGISTRY",
    "SERVED_ARCH",
    "FSDINOSegmenter",
    "SegmenterConfig",
    "build_segmenter",
    "count_parameters",
]
