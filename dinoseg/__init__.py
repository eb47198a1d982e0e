"""dinoseg: few-shot segmentation with a frozen DINOv2 and a small distilled segmenter.

The pure core: torch, numpy and transformers only. Import what you need from the submodules
(``dinoseg.backbone``, ``dinoseg.models``, ``dinoseg.predictor``, ...); importing the package
does no work.
"""

__version__ = "0.1.0"
