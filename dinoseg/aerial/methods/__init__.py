"""Aerial segmentation methods behind one interface (:class:`AerialMethod`).

- ``fewshot``   the project's few-shot model, one support set per class (:mod:`.fewshot`)
- ``kmeans``    DINOv2 patch features + MiniBatchKMeans, named by support prototypes
- ``sam-match`` SAM automatic masks labelled by DINOv2 similarity to support prototypes
- ``segformer`` SegFormer (ADE20K) mapped onto city categories

Each module imports its heavy dependencies (scikit-learn, segment-anything, transformers'
SegFormer) only when used.
"""

from dinoseg.aerial.methods.base import AerialMethod, TileSettings

__all__ = ["AerialMethod", "TileSettings"]
