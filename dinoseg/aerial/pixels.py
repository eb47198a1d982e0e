"""The pixel head: colour and texture at every pixel, beside the patch head's 14 px view.

The DINOv2 head sees a photo in 14 px patches; thin roads, field edges and green tidal strips
fall between them. The pixel head is a small MLP on each pixel's own colour and its colour and
texture statistics in boxes around it (:func:`pixel_features`), trained on the same labelled
images as the patch head (:func:`fit_pixel_head`). At map time its log-probabilities are added,
with a weight, to the patch head's (a product of the two models' evidence, renormalised:
:func:`fuse`).

Features, ``F`` = 6 + 7 per radius (27 with the default radii 3, 9, 27 px): R, G, B, the
largest channel, the spread of the channels (a saturation), the grey-level gradient magnitude;
per radius the box mean and standard deviation of R, G, B and the box mean of the gradient
magnitude. Boxes are clipped at the tile's border (means over the pixels inside).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.heads.fit import inverse_frequency
from dinoseg.heads.model import Standardized
from dinoseg.io import InputError

UNLABELLED = 255
WEIGHTS_FILE = "pixel_head.safetensors"
SPEC_FILE = "pixel_head.json"


@dataclass(frozen=True)
class PixelSpec:
    """What rebuilds a pixel head.

    Attributes:
        classes: class names, the output channels' order (the patch head's).
        radii: box radii (px) of the local statistics.
        hidden: width of the MLP's hidden layer.
    """

    classes: tuple[str, ...]
    radii: tuple[int, ...] = (3, 9, 27)
    hidden: int = 64

    @property
    def in_dim(self) -> int:
        return 6 + 7 * len(self.radii)


def box_mean(x: Tensor, r: int) -> Tensor:
    """(B, C, H, W) -> the mean over the (2r+1)^2 box around each pixel, clipped at the border
    (separable: rows then columns)."""
    x = F.avg_pool2d(x, (1, 2 * r + 1), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (2 * r + 1, 1), stride=1, padding=(r, 0), count_include_pad=False)


def pixel_features(tiles: np.ndarray | Tensor, radii: Sequence[int] = (3, 9, 27)) -> Tensor:
    """``(B, H, W, 3)`` uint8 tiles -> ``(B, F, H, W)`` float32 features (module docstring)."""
    x = torch.as_tensor(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
    top, low = x.max(1, keepdim=True).values, x.min(1, keepdim=True).values
    grey = x.mean(1, keepdim=True)
    gy = F.pad(grey[:, :, 2:] - grey[:, :, :-2], (0, 0, 1, 1), mode="replicate") / 2
    gx = F.pad(grey[..., 2:] - grey[..., :-2], (1, 1, 0, 0), mode="replicate") / 2
    grad = (gx * gx + gy * gy).sqrt()
    feats = [x, top, top - low, grad]
    for r in radii:
        both = box_mean(torch.cat([x, x * x, grad], 1), r)
        mean, sq = both[:, :3], both[:, 3:6]
        feats += [mean, (sq - mean * mean).clamp_min(0).sqrt(), both[:, 6:]]
    return torch.cat(feats, 1)


class PixelHead(Standardized):
    """Per-pixel class logits from :func:`pixel_features` (standardised, then an MLP as 1x1
    convolutions).

    Args:
        spec: the head's shape (:class:`PixelSpec`).
    """

    def __init__(self, spec: PixelSpec):
        super().__init__(spec.in_dim)
        self.spec = spec
        self.mlp = nn.Sequential(nn.Conv2d(spec.in_dim, spec.hidden, 1), nn.GELU(),
                                 nn.Conv2d(spec.hidden, len(spec.classes), 1))  # fmt: skip

    def forward(self, feats: Tensor) -> Tensor:
        """(B, F, H, W) features -> (B, M, H, W) logits."""
        return self.mlp(self.standardize_channels(feats))

    @torch.inference_mode()
    def log_probs(self, tiles: np.ndarray, rows: int = 64) -> Tensor:
        """``(B, H, W, 3)`` uint8 tiles -> ``(B, M, H, W)`` log-probabilities (one tile's
        features at a time, the MLP over ``rows`` rows at a time: its hidden layer at full
        resolution would cost ``hidden`` floats per pixel)."""
        out = torch.empty((len(tiles), len(self.spec.classes), *tiles.shape[1:3]))
        for b in range(len(tiles)):
            feats = pixel_features(tiles[b : b + 1], self.spec.radii)
            for r in range(0, feats.shape[2], rows):
                out[b : b + 1, :, r : r + rows] = self(feats[:, :, r : r + rows]).log_softmax(1)
        return out


@dataclass(frozen=True)
class PixelFit:
    """How a pixel head is fitted: ``samples`` labelled pixels drawn evenly from the images,
    ``steps`` AdamW steps of ``batch`` pixels, classes weighted ``(mean / count) ** balance``."""

    samples: int = 400_000
    steps: int = 600
    batch: int = 8192
    lr: float = 3e-3
    balance: float = 1.0
    seed: int = 0


def _sample(images: Sequence[tuple[np.ndarray, np.ndarray]], spec: PixelSpec, fit: PixelFit
            ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(N, F) features and (N,) labels of labelled pixels drawn evenly from ``images``."""
    rng = np.random.default_rng(fit.seed)
    per = max(1, fit.samples // max(1, len(images)))
    xs, ys = [], []
    for image, labels in images:
        where = np.flatnonzero(labels.reshape(-1) != UNLABELLED)
        if where.size == 0:
            continue
        pick = rng.choice(where, size=min(per, where.size), replace=False)
        feats = pixel_features(image[None], spec.radii)[0].flatten(1)  # (F, H*W)
        xs.append(feats[:, pick].T)
        ys.append(torch.as_tensor(labels.reshape(-1)[pick].astype(np.int64)))
    if not xs:
        raise InputError("no labelled pixel to fit the pixel head on")
    return torch.cat(xs), torch.cat(ys)


def fit_pixel_head(images: Sequence[tuple[np.ndarray, np.ndarray]], classes: Sequence[str],
                   fit: PixelFit | None = None, hidden: int = 64) -> PixelHead:  # fmt: skip
    """A pixel head fitted on ``(image (H, W, 3) uint8, labels (H, W) uint8)`` pairs whose
    labels index ``classes`` (255 = unlabelled). Seeded: the same inputs give the same head."""
    fit = fit or PixelFit()
    if fit.steps < 1 or fit.samples < 1 or fit.batch < 1:
        raise InputError(f"a pixel head needs steps, samples and batch >= 1, got {fit}")
    spec = PixelSpec(tuple(classes), hidden=hidden)
    x, y = _sample(images, spec, fit)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fit.seed)
        head = PixelHead(spec)
        head.set_statistics(x.mean(0), x.std(0, correction=0))
        weight = inverse_frequency(torch.bincount(y, minlength=len(classes)).float(),
                                   fit.balance)  # fmt: skip
        opt = torch.optim.AdamW(head.parameters(), lr=fit.lr, weight_decay=1e-4)
        for _ in range(fit.steps):
            j = torch.randint(0, len(y), (min(fit.batch, len(y)),))
            logits = head(x[j].view(len(j), -1, 1, 1)).flatten(1)
            loss = F.cross_entropy(logits, y[j], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not torch.isfinite(loss):
            raise InputError("the pixel head's loss is not finite; nothing written")
    return head.eval()


def fuse(probs: Tensor, pixel_log_probs: Tensor, weight: float) -> Tensor:
    """``(B, M, H, W)`` patch-head probabilities times the pixel head's to the power
    ``weight``, renormalised: ``softmax(log probs + weight * pixel log-probs)``."""
    return (probs.clamp_min(1e-6).log() + weight * pixel_log_probs).softmax(1)


def save_pixel_head(head: PixelHead, out_dir: str | Path, report: dict[str, Any]) -> None:
    """Write ``pixel_head.safetensors`` and ``pixel_head.json`` (spec + ``report``)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / WEIGHTS_FILE))
    spec = asdict(head.spec)  # tuples are written as JSON lists
    (out / SPEC_FILE).write_text(json.dumps({"spec": spec, "fit": report}, indent=2))


def load_pixel_head(ckpt_dir: str | Path) -> PixelHead | None:
    """The checkpoint's pixel head, or None when it has none (heads trained without one)."""
    from safetensors.torch import load_file

    path = Path(ckpt_dir)
    if not (path / SPEC_FILE).is_file():
        return None
    try:
        raw = json.loads((path / SPEC_FILE).read_text())["spec"]
        spec = PixelSpec(tuple(raw["classes"]), tuple(int(r) for r in raw["radii"]),
                         int(raw["hidden"]))  # fmt: skip
        head = PixelHead(spec)
        head.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=True)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{ckpt_dir}: unreadable pixel head ({e})") from e
    return head.eval()
