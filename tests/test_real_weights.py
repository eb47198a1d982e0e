"""The packaged DINOv2-S with the prototype baseline on real CamVid episodes must clearly beat
the same architecture with random weights."""

from __future__ import annotations

import numpy as np
import torch

from dinoseg.backbone import DEFAULT_LAYERS, DinoBackbone
from dinoseg.backbone.packaged import dinov2_small_config
from dinoseg.data import EpisodeSampler, FolderDataset
from dinoseg.metrics import SegmentationMeter
from dinoseg.models.prototype import PrototypeBaseline
from dinoseg.predictor import FewShotPredictor

EPISODES = 33  # 3 per CamVid class
MARGIN = 10.0  # mIoU points the real weights must clear over random ones


def _miou(backbone: DinoBackbone, sampler: EpisodeSampler) -> float:
    predictor = FewShotPredictor(PrototypeBaseline(), backbone, image_size=336)
    meter = SegmentationMeter()
    for ep in sampler:
        predictor.set_support(ep["support_images"], [m == 1 for m in ep["support_masks"]])
        (pred,) = predictor.predict([ep["query_image"]])
        meter.update(pred.mask, ep["query_mask"], ep["class_id"])
    return float(meter.summary()["miou"])


def test_real_backbone_beats_random_init(camvid, packaged_backbone):
    from transformers import Dinov2Model

    sampler = EpisodeSampler(FolderDataset(camvid, "val"), shots=1, n_episodes=EPISODES, seed=0)
    torch.manual_seed(0)
    random_bb = DinoBackbone(Dinov2Model(dinov2_small_config()), DEFAULT_LAYERS, spec="random")
    real = _miou(packaged_backbone, sampler)
    rand = _miou(random_bb, sampler)
    print(
        f"prototype 1-shot mIoU, {EPISODES} CamVid val episodes: real {real:.1f}, random {rand:.1f}"
    )
    assert np.isfinite(real) and np.isfinite(rand)
    assert real > rand + MARGIN
