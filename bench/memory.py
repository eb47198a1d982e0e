"""Support memory benchmark: the prototype, the nearest-neighbour vote and their fusion, with and
without labelled images retrieved from a support memory, on the same seeded episodes.

Every row is a named predictor in one :func:`dinoseg.eval.protocol.evaluate` call (the episode's
query and supports are never retrieved). Tables (``--table``):

* ``base``: the prototype alone and with the chosen memory mode (e.g. at other sizes);
* ``avg``: the averaged prototype with 0 / 5 / 30 retrieved images;
* ``issue``: issue 18's table (prototype; prototype with 5 retrieved images averaged into it;
  the vote with the support alone and over the support + 3 / 10 / 30 / 100 retrieved images);
* ``curve``: 0 / 5 / 10 / 20 / 50 / all retrieved images per query for the prototype (memory as
  its mode, i.e. fused with the vote), the vote alone (and ``--checkpoint``'s trained model);
* ``select``: the grid the defaults were chosen on (run it on train-split episodes);
* ``small``: small-object variants (class-balanced votes, fewer neighbours, lower threshold);
* ``trained`` / ``trained-curve``: with ``--checkpoint``, the trained model with the memory at
  several vote shares / at 5 ... all retrieved images.

Usage (README, "Support memory")::

    OMP_NUM_THREADS=1 python bench/memory.py --data ../shared/data/camvid --split val --fold 0 \\
        --memory runs/memory/camvid-train-336 --table issue --episodes 120
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.feature_cache import CachedPredictor, FeatureCache
from dinoseg.memory import MemoryMode, SupportMemory, global_descriptor
from dinoseg.models.knn import KnnVote, prob_to_logits, support_keys
from dinoseg.models.prototype import PrototypeBaseline, pair_logits
from dinoseg.predictor import FewShotPredictor
from dinoseg.preprocess import Geometry


class VoteFusion(nn.Module):
    """Mix of two models' probabilities: ``(1 - weight) * p_base + weight * p_vote`` (the
    1-shot fusion of the prototype and the vote, measured here; not in the core: it did not win
    on both domains).

    Args:
        base: a model (e.g. the prototype baseline) returning (B, 1, h', w') logits.
        vote: a model returning (B, 1, h, w) logits (resampled to the base's size).
        weight: the vote's share.
    """

    def __init__(self, base: nn.Module, vote: nn.Module, weight: float = 0.5):
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight={weight}: give a share in [0, 1]")
        self.base, self.vote, self.weight = base, vote, weight

    def forward(
        self, query_feats: list[Tensor], support_feats: list[Tensor], support_masks: Tensor
    ) -> Tensor:
        """Same arguments as the models it mixes; returns (B, 1, h', w') logits."""
        base = self.base(query_feats, support_feats, support_masks)
        vote = self.vote(query_feats, support_feats, support_masks)
        vote = F.interpolate(vote, size=base.shape[-2:], mode="bilinear", align_corners=False)
        p = (1 - self.weight) * torch.sigmoid(base) + self.weight * torch.sigmoid(vote)
        return prob_to_logits(p)


class AveragedPrototype(CachedPredictor):
    """The retrieved images' labelled patches averaged into the fg / bg prototypes (unit
    vectors, weighted by the patches' class fractions), then the prototype's cosine logits."""

    def _with_memory(self, logit: Tensor, q_feats: list[Tensor], j: int, image: np.ndarray,
                     geom: Geometry) -> tuple[Tensor, tuple[str, ...]]:
        from dinoseg.memory.labels import image_hash

        assert self.memory is not None and self.class_name is not None and self._support
        query = q_feats[self._memory_layer][j]
        desc = global_descriptor(query, geom, self.memory.settings.patch)
        exclude = self._support_hashes | {image_hash(image)}
        hashes = self.memory.retrieve(desc, self.class_name, self.memory_mode.images, exclude)
        s_feats, s_masks = self._support
        s_keys, s_vals = support_keys(s_feats[self._memory_layer][0], s_masks[0])
        m_keys, m_vals = self.memory.patches(hashes, self.class_name)
        keys, vals = torch.cat([s_keys, m_keys.float()]), torch.cat([s_vals, m_vals])
        fg = (vals[:, None] * keys).sum(0) / vals.sum().clamp_min(1e-6)
        bg = ((1 - vals)[:, None] * keys).sum(0) / (1 - vals).sum().clamp_min(1e-6)
        return pair_logits(query[None], fg[None], bg[None], 20.0)[0], tuple(hashes)


def _mode(args: argparse.Namespace, **kw: Any) -> MemoryMode:
    base = MemoryMode(neighbours=args.neighbours, temperature=args.temperature,
                      weight=args.weight, balance=args.balance)
    return replace(base, **kw)


Variants = dict[str, tuple[Callable[[], Any], Any]]


def _knn(args: argparse.Namespace, **kw: Any) -> Callable[[], KnnVote]:
    return lambda: KnnVote(neighbours=kw.get("k", args.neighbours),
                           temperature=kw.get("t", args.temperature))  # fmt: skip


def _issue(args: argparse.Namespace) -> Variants:
    """The issue's vote: 10 neighbours (and 5 at 30)."""
    proto, knn10 = PrototypeBaseline, _knn(args, k=10)
    out: Variants = {"prototype": (proto, None), "prototype+avg@5": (proto, _mode(args, images=5)),
                     "knn(k=10)": (knn10, None)}
    out |= {f"knn(k=10)+memory@{k}": (knn10, _mode(args, images=k, neighbours=10, weight=1.0,
                                                    balance=0.0))
            for k in (3, 10, 30, 100)}  # fmt: skip
    out["knn(k=5)+memory@30"] = (_knn(args, k=5), _mode(args, images=30, neighbours=5,
                                                         weight=1.0, balance=0.0))
    out["prototype+memory@30"] = (proto, _mode(args, images=30))  # the chosen fusion
    return out


def _curve(args: argparse.Namespace) -> Variants:
    proto, knn = PrototypeBaseline, _knn(args)
    out: Variants = {"prototype": (proto, None), "knn": (knn, None),
                     "fusion": (lambda: VoteFusion(proto(), knn(), args.fusion), None)}
    for k in (5, 10, 20, 50, None):
        name = "all" if k is None else k
        out[f"prototype+memory@{name}"] = (proto, _mode(args, images=k))
        out[f"knn+memory@{name}"] = (knn, _mode(args, images=k, weight=1.0, balance=0))
    return out


def _select(args: argparse.Namespace) -> Variants:
    proto = PrototypeBaseline
    out: Variants = {"prototype": (proto, None)}
    for t in args.grid_t:
        for k in args.grid_k:
            out[f"knn(t={t},k={k})"] = (_knn(args, t=t, k=k), None)
            out[f"knn(t={t},k={k})+memory@30"] = (
                _knn(args, t=t, k=k), _mode(args, images=30, temperature=t, neighbours=k, weight=1))
    for w in args.grid_w:
        out[f"fusion(w={w})"] = (lambda w=w: VoteFusion(proto(), _knn(args)(), w), None)
        out[f"prototype+memory@30(w={w})"] = (proto, _mode(args, images=30, weight=w))
    return out


def _small(args: argparse.Namespace) -> Variants:
    """Small objects: the chosen fusion and its variants."""
    proto = PrototypeBaseline
    out: Variants = {"prototype+memory@30": (proto, _mode(args, images=30))}
    for b in (0.5, 1.0):
        out[f"prototype+memory@30(balance={b})"] = (proto, _mode(args, images=30, balance=b))
    out["knn+memory@30(balance=1)"] = (_knn(args), _mode(args, images=30, balance=1, weight=1))
    out["prototype+memory@30(w=0.5)"] = (proto, _mode(args, images=30, weight=0.5))
    for k in (1, 3):
        out[f"prototype+memory@30(k={k})"] = (proto, _mode(args, images=30, neighbours=k))
    for thr in (0.3, 0.4):
        out[f"prototype+memory@30(thr={thr})"] = (proto, _mode(args, images=30))
    return out


def variants(table: str, args: argparse.Namespace) -> Variants:
    """name -> (model factory, memory mode or None)."""
    proto = PrototypeBaseline
    tables: dict[str, Callable[[], Variants]] = {
        "issue": lambda: _issue(args),
        # the prototype alone and with the chosen memory mode
        "base": lambda: {"prototype": (proto, None),
                         "prototype+memory@30": (proto, _mode(args, images=30))},
        "trained": lambda: {"prototype": (proto, None)},  # with --checkpoint (trained_models)
        "trained-curve": lambda: {"prototype": (proto, None)},
        # what averaging into one prototype does (unit vectors, support + K)
        "avg": lambda: {f"prototype+avg@{k}": (proto, _mode(args, images=k)) for k in (0, 5, 30)},
        # the memory mode's defaults at 5 ... all images
        "fused-curve": lambda: {f"prototype+memory@{'all' if k is None else k}":
                                (proto, _mode(args, images=k))
                                for k in (5, 10, 20, 30, 50, None)},
        "curve": lambda: _curve(args),
        "select": lambda: _select(args),
        "small": lambda: _small(args),
    }
    if table not in tables:
        raise SystemExit(f"unknown table {table!r}")
    return tables[table]()


def build_models(args: argparse.Namespace, memory: SupportMemory,
                 cache: FeatureCache) -> dict[str, FewShotPredictor]:
    from dinoseg.backbone import load_backbone

    backbone = load_backbone("packaged:dinov2-s", layers=[args.layer])
    models: dict[str, FewShotPredictor] = {}
    for name, (factory, mode) in variants(args.table, args).items():
        threshold = float(name.split("thr=")[1].rstrip(")")) if "thr=" in name else args.threshold
        p = FewShotPredictor(factory(), backbone, image_size=args.image_size,
                             threshold=threshold, model_id=name)
        if "+avg" in name:  # its own way of using the memory, on the shared feature cache
            p = AveragedPrototype(p, cache)
        if mode is not None:
            p.attach_memory(memory, mode)
        models[name] = p
    if args.checkpoint is not None:
        models |= trained_models(args, memory)
    return models


def trained_models(args: argparse.Namespace, memory: SupportMemory) -> dict[str, Any]:
    """``--checkpoint``'s model alone and with the memory (``select``: one per vote share)."""
    from dinoseg.predictor import load_predictor

    base = load_predictor(str(args.checkpoint), image_size=args.image_size)
    base.model_id = "trained"
    out: dict[str, Any] = {"trained": base}
    if args.table in ("select", "trained"):
        modes = {f"trained+memory@30(w={w})": _mode(args, images=30, weight=w)
                 for w in args.grid_w}
    else:
        curve = args.table in ("curve", "trained-curve")
        ks: tuple[int | None, ...] = (5, 10, 20, 50, None) if curve else (30,)
        modes = {f"trained+memory@{'all' if k is None else k}":
                 _mode(args, images=k, weight=args.trained_weight) for k in ks}
    for name, mode in modes.items():
        p = FewShotPredictor(base.model, base.backbone, image_size=base.image_size,
                             threshold=base.threshold, model_id=name)
        p.attach_memory(memory, mode)
        out[name] = p
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--memory", type=Path, required=True, help="a built memory directory")
    p.add_argument("--table", default="issue", help="issue | curve | select | small")
    p.add_argument("--episodes", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=336)
    p.add_argument("--layer", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--neighbours", type=int, default=5)
    p.add_argument("--temperature", type=float, default=0.02)
    p.add_argument("--weight", type=float, default=0.75, help="vote share with a memory")
    p.add_argument("--balance", type=float, default=MemoryMode.balance,
                   help="class-balanced vote strength with a memory")
    p.add_argument("--fusion", type=float, default=0.25, help="vote share without a memory")
    p.add_argument("--trained-weight", type=float, default=0.5)
    p.add_argument("--checkpoint", type=Path, default=None)
    floats = lambda text: [float(x) for x in text.split(",") if x]  # noqa: E731
    p.add_argument("--grid-t", type=floats, default=[0.02, 0.05, 0.1], help="select: temperatures")
    p.add_argument("--grid-k", type=lambda t: [int(x) for x in t.split(",")], default=[5, 10, 20],
                   help="select: neighbours")
    p.add_argument("--grid-w", type=floats, default=[0.25, 0.5, 0.75], help="select: vote shares")
    p.add_argument("--feature-cache", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="report JSON")
    return p


def _print_table(result: Any, ds: Any, fold: Any) -> None:
    """One row per model: mIoU, FB-IoU, the fold's class IoUs, ms per episode."""
    names = {str(c): ds.class_names[c] for c in sorted(fold.novel)}
    print(f"{'model':34s} {'mIoU':>6s} {'FB-IoU':>7s} " + " ".join(f"{n[:10]:>10s}"
                                                                 for n in names.values())
          + f" {'ms/ep':>7s}")
    for name, rep in result.report["models"].items():
        m = rep["metrics"]
        per = [(m["per_class"].get(c) or {}).get("iou") for c in names]
        cells = " ".join(f"{v:10.1f}" if v is not None else f"{'-':>10s}" for v in per)
        ms = 1000 * rep["timing"]["model_seconds_per_episode"]
        print(f"{name:34s} {m['miou']:6.1f} {m['fb_iou']:7.1f} {cells} {ms:7.0f}")


def main() -> None:
    args = _parser().parse_args()

    from dinoseg.data.episodes import EpisodeSampler
    from dinoseg.data.folds import dataset_fold
    from dinoseg.data.open import open_dataset
    from dinoseg.eval.protocol import evaluate

    ds = open_dataset(args.data, args.split)
    fold = dataset_fold(ds.class_names, ds.class_ids, args.fold)
    sampler = EpisodeSampler(ds, classes=list(fold.novel), shots=1, n_episodes=args.episodes,
                             seed=args.seed)
    memory = SupportMemory.open(args.memory)
    cache = FeatureCache(disk_dir=args.feature_cache)
    models = build_models(args, memory, cache)
    start = time.perf_counter()
    result = evaluate(models, sampler, class_names=ds.class_names, progress=False,
                      cache=cache, n_examples=0,
                      settings={"data": str(args.data), "split": args.split, "fold": args.fold,
                                "memory": str(args.memory), "table": args.table})
    print(f"{args.data} {args.split} fold {args.fold}, {len(sampler)} episodes (seed "
          f"{args.seed}), {args.image_size} px, block {args.layer}, memory {len(memory)} images "
          f"({time.perf_counter() - start:.0f} s)")
    _print_table(result, ds, fold)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result.report))


if __name__ == "__main__":
    main()
