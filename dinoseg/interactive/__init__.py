"""Interactive segmentation: positive / negative clicks and rectangles -> a mask.

- :mod:`.prompts`: :class:`Click`, :class:`Box` and their validation (image pixels);
- :mod:`.features`: DINOv2 patch features of one image and per-click similarity maps;
- :mod:`.segmenter`: :class:`ClickSegmenter`, point prototypes grown over patch similarity,
  outlines snapped to image edges (:mod:`.refine`);
- :mod:`.box`: a rectangle to a mask (packaged LiteMedSAM box prompt, or DINOv2);
- :mod:`.engine`: :class:`InteractiveEngine`, many images, features cached in memory and on disk;
- :mod:`.noc`: the NoC@IoU protocol with simulated clicks, and the brushing baseline.
"""

from dinoseg.interactive.engine import InteractiveEngine, Session
from dinoseg.interactive.prompts import Box, Click, check_prompts
from dinoseg.interactive.segmenter import ClickSegmenter, InteractiveConfig

__all__ = [
    "Box",
    "Click",
    "ClickSegmenter",
    "InteractiveConfig",
    "InteractiveEngine",
    "Session",
    "check_prompts",
]
