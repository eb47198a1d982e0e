"""Fast validation on novel-class episodes over a feature bank (no encoder calls).

IoU is measured on the bank's label grid (4 labels per feature cell), not at full image
resolution: it tracks progress during training; ``dinoseg eval`` gives the exact figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dinoseg.data import EpisodeSampler
from dinoseg.device import module_device
from dinoseg.metrics import SegmentationMeter
from dinoseg.train.bank import IGNORE, FeatureBank


class BankValidator:
    """Fixed episodes (HSNet protocol: seeded, no shuffling) evaluated on cached features.

    Args:
        bank: validation features (a bank of the validation split).
        classes: novel classes to evaluate.
        shots: K.
        episodes: number of episodes.
        seed: episode seed.
    """

    def __init__(self, bank: FeatureBank, classes: Sequence[int], *, shots: int, episodes: int,
                 seed: int = 0, min_area: float = 0.005):
        sampler = EpisodeSampler(bank.dataset, classes=classes, shots=shots,
                                 n_episodes=episodes, seed=seed, min_area=min_area)
        self.bank = bank
        self.episodes = [sampler.episode_ids(i) for i in range(len(sampler))]

    @torch.inference_mode()
    def run(self, model: nn.Module) -> dict[str, float]:
        """mIoU / FB-IoU (percent) of ``model`` on the fixed episodes."""
        was_training = model.training
        model.eval()
        meter = SegmentationMeter()
        device = module_device(model)
        for class_id, q_stem, s_stems in self.episodes:
            q = self.bank.items[self.bank.index[q_stem]]
            sup = [self.bank.items[self.bank.index[s]] for s in s_stems]
            if any(s.grid != sup[0].grid for s in sup):
                continue  # supports of different sizes: not representable in one batch
            q_feats = [f.float()[None].to(device) for f in q.feats]
            s_feats = [torch.stack([s.feats[i].float() for s in sup])[None].to(device)
                       for i in range(len(q.feats))]
            s_masks = torch.stack([(s.labels == class_id).float() for s in sup])[None]
            logits = model(q_feats, s_feats, s_masks.to(device)).float().cpu()
            logits = nn.functional.interpolate(logits, size=q.labels.shape, mode="bilinear",
                                               align_corners=False)
            pred = (logits[0, 0] > 0).numpy()
            labels = q.labels.numpy()
            target = np.where(labels == IGNORE, 255, labels == class_id).astype(np.uint8)
            meter.update(pred, target, class_id)
        model.train(was_training)
        summary = meter.summary()
        return {"miou": float(summary["miou"] or 0.0), "fb_iou": float(summary["fb_iou"] or 0.0)}
