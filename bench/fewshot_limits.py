"""What limits few-shot matching on frozen DINOv2 features? Training-free heads and diagnostics.

On one fold's novel-class val episodes (any folder dataset; the README's numbers are PASCAL-5i
fold 1 on the VOC subset split), every head sees the same episodes and the same backbone
features, and the table says how much each factor costs:

* heads: the prototype baseline (``dinoseg``'s), the prototype averaged over all blocks, the
  nearest support patch (top-k), and a per-episode logistic regression on the support's patches;
* ``--self-support``: the query is its own support (its own ground-truth mask), which removes
  the support-to-query appearance gap and leaves only what the features and the feature grid
  can separate — an upper bound for any head on these features;
* ``--image-size``: the resolution of the encoder input.

Usage::

    OMP_NUM_THREADS=1 python bench/fewshot_limits.py --data runs/data/pascal-voc-split --fold 1
    OMP_NUM_THREADS=1 python bench/fewshot_limits.py --data runs/data/pascal-voc-split --fold 1 \\
        --self-support --heads prototype,probe
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.models.prototype import (
    PrototypeBaseline,
    masked_average,
    masks_to_grid,
    pair_logits,
)


def _normalised(feats: Sequence[Tensor], layers: Sequence[int]) -> Tensor:
    """Concatenation of the L2-normalised channels of ``layers`` (dim -3 is channels)."""
    return torch.cat([F.normalize(feats[i], dim=-3) for i in layers], dim=-3)


class NearestPatch(nn.Module):
    """Foreground log-odds ``t * (sim_fg - sim_bg)``: mean of the top-k cosine similarities of
    a query patch to the support's foreground patches minus that to its background patches."""

    def __init__(self, layers: Sequence[int] = (-1,), topk: int = 1, temperature: float = 20.0):
        super().__init__()
        self.layers, self.topk, self.t = tuple(layers), topk, temperature

    def forward(self, query_feats: list[Tensor], support_feats: list[Tensor],
                support_masks: Tensor) -> Tensor:
        """L x (B, C, h, w), L x (B, K, C, hs, ws), (B, K, Hs, Ws) -> (B, 1, h, w) logits."""
        q, s = _normalised(query_feats, self.layers), _normalised(support_feats, self.layers)
        b, c, h, w = q.shape
        hs, ws = s.shape[-2:]
        fg = masks_to_grid(support_masks, (hs, ws)).reshape(b, 1, -1) >= 0.5
        q = F.normalize(q.flatten(2), dim=1)
        s = F.normalize(s.permute(0, 2, 1, 3, 4).reshape(b, c, -1), dim=1)
        sim = torch.bmm(q.transpose(1, 2), s)  # (B, h*w, K*hs*ws)
        k = min(self.topk, sim.shape[2])
        best_fg = sim.masked_fill(~fg, -2.0).topk(k, dim=2).values.mean(2)
        best_bg = sim.masked_fill(fg, -2.0).topk(k, dim=2).values.mean(2)
        return (self.t * (best_fg - best_bg)).view(b, 1, h, w)


class LinearProbe(nn.Module):
    """Per-episode logistic regression (class-balanced, L2-regularised, L-BFGS) on the support's
    normalised patch features; its log-odds on the query patches."""

    def __init__(self, layers: Sequence[int] = (-1,), steps: int = 100, weight_decay: float = 1e-3,
                 scale: float = 10.0):
        super().__init__()
        self.layers, self.steps, self.wd, self.scale = tuple(layers), steps, weight_decay, scale

    def _fit(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, C) features, y (N,) soft labels -> weight (C,), bias (1,)."""
        weights = y / y.sum().clamp_min(1.0) + (1 - y) / (1 - y).sum().clamp_min(1.0)
        w = torch.zeros(x.shape[1], requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, bias], lr=1, max_iter=self.steps,
                                line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            z = x @ w * self.scale + bias
            bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
            loss = (bce * weights).sum() / 2 + self.wd * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return w.detach(), bias.detach()

    def forward(self, query_feats: list[Tensor], support_feats: list[Tensor],
                support_masks: Tensor) -> Tensor:
        """L x (B, C, h, w), L x (B, K, C, hs, ws), (B, K, Hs, Ws) -> (B, 1, h, w) logits."""
        q, s = _normalised(query_feats, self.layers), _normalised(support_feats, self.layers)
        b, c, h, w = q.shape
        hs, ws = s.shape[-2:]
        y = masks_to_grid(support_masks, (hs, ws)).reshape(b, -1)
        x = s.permute(0, 1, 3, 4, 2).reshape(b, -1, c)
        out = []
        # the predictor runs under inference_mode; the probe needs autograd on fresh tensors
        with torch.inference_mode(False), torch.enable_grad():
            for i in range(b):
                weight, bias = self._fit(x[i].clone(), y[i].clone())
                logits = q[i].clone().flatten(1).T @ weight * self.scale + bias
                out.append(logits.view(1, h, w))
        return torch.stack(out)


class SelfSupportPrototype(nn.Module):
    """Self-support matching (SSP, Fan et al. 2022): the prototype's confident query patches
    become extra prototypes — the query's own appearance narrows the support-query gap.

    fg' = (support fg + mean of query patches with p > ``fg_conf``) / 2, bg' likewise from
    ``p < bg_conf``; the log-odds of the cosine softmax against fg' and bg'.
    """

    def __init__(self, fg_conf: float = 0.7, bg_conf: float = 0.6, temperature: float = 20.0,
                 rounds: int = 1):
        super().__init__()
        self.fg_conf, self.bg_conf, self.t, self.rounds = fg_conf, bg_conf, temperature, rounds

    def forward(self, query_feats: list[Tensor], support_feats: list[Tensor],
                support_masks: Tensor) -> Tensor:
        """L x (B, C, h, w), L x (B, K, C, hs, ws), (B, K, Hs, Ws) -> (B, 1, h, w) logits."""
        q, s = query_feats[-1], support_feats[-1]
        fg_mask = masks_to_grid(support_masks, s.shape[-2:])
        fg = masked_average(s, fg_mask)  # (B, C)
        bg = masked_average(s, 1 - fg_mask)
        logits = pair_logits(q, fg, bg, self.t)
        for _ in range(self.rounds):
            p = torch.sigmoid(logits)  # (B, 1, h, w)
            q_fg = masked_average(q[:, None], (p > self.fg_conf).float())
            q_bg = masked_average(q[:, None], (p < self.bg_conf).float())
            has_fg = (p > self.fg_conf).flatten(1).any(1, keepdim=True)
            fg2 = torch.where(has_fg, (fg + q_fg) / 2, fg)
            logits = pair_logits(q, fg2, (bg + q_bg) / 2, self.t)
        return logits


HEADS: dict[str, Callable[[], nn.Module]] = {
    "prototype": PrototypeBaseline,
    "prototype-all-blocks": lambda: PrototypeBaseline(embed_layer=None),
    "nearest-patch": NearestPatch,
    "nearest-5": lambda: NearestPatch(topk=5),
    "probe": LinearProbe,
    "probe-3-blocks": lambda: LinearProbe(layers=(-3, -2, -1)),
    "self-support": SelfSupportPrototype,
    "self-support-2": lambda: SelfSupportPrototype(rounds=2),
}


class SelfSupport:
    """Episodes whose support is the query itself (image and mask): no appearance gap."""

    def __init__(self, sampler: Any):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ep = dict(self.sampler[i])
        ep["support_images"], ep["support_masks"] = [ep["query_image"]], [ep["query_mask"]]
        return ep

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sampler, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--fold", type=int, default=1)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--image-size", type=int, default=336)
    p.add_argument("--heads", default=",".join(HEADS), help=f"comma list of {', '.join(HEADS)}")
    p.add_argument("--self-support", action="store_true", help="the query is its own support")
    p.add_argument("--layers", default="", help="backbone blocks, e.g. 6,8,10,12 (default 6-10)")
    p.add_argument("--feature-cache", type=Path, default=None)
    args = p.parse_args()

    from dinoseg.backbone import load_backbone
    from dinoseg.data.episodes import EpisodeSampler
    from dinoseg.data.folds import dataset_fold
    from dinoseg.data.open import open_dataset
    from dinoseg.eval.protocol import evaluate
    from dinoseg.feature_cache import FeatureCache
    from dinoseg.predictor import FewShotPredictor

    names = [h for h in args.heads.split(",") if h]
    unknown = sorted(set(names) - set(HEADS))
    if unknown:
        p.error(f"unknown heads {unknown}; known: {', '.join(HEADS)}")
    ds = open_dataset(args.data, "val")
    fold = dataset_fold(ds.class_names, ds.class_ids, args.fold)
    sampler: Any = EpisodeSampler(ds, classes=list(fold.novel), shots=args.shots,
                                  n_episodes=args.episodes, seed=0)
    if args.self_support:
        sampler = SelfSupport(sampler)
    layers = [int(x) for x in args.layers.split(",") if x] or None
    backbone = load_backbone("packaged:dinov2-s", layers=layers)
    models = {n: FewShotPredictor(HEADS[n](), backbone, image_size=args.image_size, model_id=n)
              for n in names}
    start = time.perf_counter()
    result = evaluate(models, sampler, class_names=ds.class_names, progress=False,
                      cache=FeatureCache(disk_dir=args.feature_cache))
    mode = "query as its own support" if args.self_support else f"{args.shots}-shot"
    print(f"fold {args.fold}, {mode}, {len(sampler)} episodes, {args.image_size} px, "
          f"blocks {list(backbone.layers)} (heads use the last unless named -all-blocks) "
          f"({time.perf_counter() - start:.0f} s)")
    print(f"{'head':22s} {'mIoU':>6s} {'FB-IoU':>7s} {'ms/episode':>11s}")
    for name, report in result.report["models"].items():
        m, t = report["metrics"], report["timing"]
        print(f"{name:22s} {m['miou']:6.1f} {m['fb_iou']:7.1f} "
              f"{1000 * t['model_seconds_per_episode']:11.1f}")


if __name__ == "__main__":
    main()
