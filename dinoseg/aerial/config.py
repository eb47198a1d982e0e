"""``AerialConfig``: every knob of ``dinoseg aerial`` (code defaults <- params.yaml ``aerial``
<- flags), in a module of its own so the method builders and the pipeline both import it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dinoseg.aerial.adapt import AdaptSettings
from dinoseg.aerial.methods.base import TileSettings
from dinoseg.aerial.methods.head import check_scales, check_views
from dinoseg.aerial.methods.segformer import SEGFORMER_B5
from dinoseg.aerial.reader import MAX_TILED_PIXELS
from dinoseg.aerial.tiling import plan_tiles
from dinoseg.io import InputError


@dataclass
class AerialConfig:
    """Every knob of ``dinoseg aerial`` (code defaults <- params.yaml ``aerial`` <- flags)."""

    method: str = "fewshot"
    # few-shot model spec (prototype | checkpoint dir | models:/...); for method head, the head
    # checkpoint of `dinoseg aerial train` (a directory or models:/dinoseg-aerial-head@champion)
    model: str = "prototype"
    device: str = "auto"  # where the DINOv2 encoder runs: auto | cpu | cuda[:N] | mps
    head_model: str = "models:/dinoseg-aerial-head@champion"  # method head when model is few-shot's
    head_views: int = 1  # head: orientations each tile is scored in and averaged (1-8)
    # head: encoder scales (x the head's own) each view is scored at and averaged; (1, 1.5)
    # gives finer roads for 3.25x the encoder's work (FINE_SCALES, docs/aerial.md)
    head_scales: tuple[float, ...] = (1.0,)
    # head: self-training steps on each photo's confident patches (0 = off) and the top class
    # probability of a pseudo-label; chosen on the aerial gate's images, 3 heads (docs/aerial.md)
    head_adapt_steps: int = 20
    head_adapt_confidence: float = 0.7
    head_adapt_rounds: int = 3  # head: pseudo-labelling rounds (each `head_adapt_steps` steps)
    head_adapt_tiles: int = 16  # head: tiles spread over the photo that it adapts on
    head_adapt_lr: float = 3e-4  # head: AdamW learning rate of the self-training steps
    # classes a planner must not miss: `dinoseg aerial eval` reports their false-negative rate,
    # and the head adds head_safety_bias log-odds to their scores when the map is drawn (not to
    # the adaptation's pseudo-labels): fewer roads missed for little mIoU (docs/aerial.md);
    # classes the head lacks are skipped
    # 1.5: the largest bias costing at most 0.1 mIoU on the gate's images with the default
    # heads (blocks 2, 4, 6, 8, 10; three seeds: road FNR 36.6 -> 27.0 %); 0.5 for blocks 6-10
    safety_classes: tuple[str, ...] = ("road",)
    head_safety_bias: float = 1.5
    # head: weight of the pixel head's log-probabilities (colour and texture per pixel,
    # dinoseg.aerial.pixels) added to the patch head's; heads without one skip it. 1.5 (the
    # best weight on 18 non-reported val images) gives +1.5 to +3.2 mIoU with one view there
    # but misses 1-3 points more roads on 12 of them: off by default (docs/aerial.md)
    head_pixel_weight: float = 0.0
    feature_cache: str = ""  # head: directory caching tile features (re-runs, evaluations)
    backbone: str = ""  # "" = the model's own (few-shot) / packaged:dinov2-s
    feature_layer: int = 10  # DINOv2 block clustered / matched by kmeans and sam-match
    tile: int = 518
    overlap: int = 96
    tile_batch: int = 2
    image_size: int = 0  # encoder px per tile side; 0 = the tile size (native resolution)
    unknown_threshold: float = 0.3  # few-shot: best class probability below it -> unknown
    k: int = 8
    fit_tiles: int = 16
    seed: int = 0
    sam_model: str = "auto"  # auto: from the checkpoint file name, else litemedsam (packaged)
    sam_checkpoint: str = ""
    sam_prompts: str = "auto"  # auto | points (SAM's generator) | boxes (box grid, LiteMedSAM)
    points_per_side: int = 6  # points (or finest-scale boxes) along a tile side
    pred_iou_thresh: float = 0.6
    stability_thresh: float = 0.6
    segformer: str = SEGFORMER_B5
    refine: bool = False
    refine_block: int = 512
    refine_band: int = 8
    refine_min_iou: float = 0.5
    refine_classes: tuple[str, ...] = ("building",)  # () = every class
    min_area: int = 64
    smooth_iterations: int = 1
    pixel_size: float = 0.5  # metres per pixel (areas, 3D model)
    height_rule: str = "fixed"  # fixed | area
    building_height: float = 10.0
    mesh_cells: int = 256
    preview_max_side: int = 4096
    max_pixels: int = MAX_TILED_PIXELS

    def check(self) -> None:
        """Raise :class:`InputError` on values no run could use (the method name is checked by
        :func:`dinoseg.aerial.build.check_method`, where the methods are registered)."""
        if self.height_rule not in ("fixed", "area"):
            raise InputError(f"height_rule {self.height_rule!r}: use 'fixed' or 'area'")
        for key in ("tile", "tile_batch", "mesh_cells", "preview_max_side", "refine_block"):
            if getattr(self, key) < 1:
                raise InputError(f"{key} must be positive, got {getattr(self, key)}")
        check_views(self.head_views, "head_views")
        check_scales(self.head_scales, "head_scales")
        self.adapt_settings  # noqa: B018  (checks the head_adapt_* values)
        if not math.isfinite(self.head_safety_bias):
            raise InputError(f"head_safety_bias must be a finite number, got "
                             f"{self.head_safety_bias}")  # fmt: skip
        if not (math.isfinite(self.head_pixel_weight) and 0 <= self.head_pixel_weight <= 10):
            raise InputError(f"head_pixel_weight must be between 0 and 10, got "
                             f"{self.head_pixel_weight}")  # fmt: skip
        if self.pixel_size <= 0 or self.building_height <= 0:
            raise InputError("pixel_size and building_height must be positive")
        plan_tiles((self.tile, self.tile), self.tile, self.overlap)  # tile and overlap sizes
        from dinoseg.device import check_device_name

        check_device_name(self.device)  # e.g. cuda asked for on a machine without one

    @property
    def class_bias(self) -> dict[str, float]:
        """Log-odds the head method adds to each class's scores (the safety classes')."""
        return {name: self.head_safety_bias for name in self.safety_classes}

    @property
    def tiles(self) -> TileSettings:
        return TileSettings(self.tile, self.overlap, self.tile_batch)

    @property
    def adapt_settings(self) -> AdaptSettings:
        return AdaptSettings(self.head_adapt_steps, self.head_adapt_confidence,
                             self.head_adapt_tiles, self.head_adapt_rounds,
                             self.head_adapt_lr, seed=self.seed)  # fmt: skip

    @property
    def scale(self) -> float:
        return self.image_size / self.tile if self.image_size else 1.0
