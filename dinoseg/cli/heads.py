"""``dinoseg heads train | eval``: a supervised head on frozen features, and how it compares.

``train`` writes a head checkpoint directory from labelled dataset folders
(:func:`dinoseg.heads.train.train_head`); ``eval`` runs heads, few-shot models and their fusion
on the same seeded episodes (:func:`dinoseg.heads.compare.compare`) and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dinoseg.data.folds import DEFAULT_MIN_AREA
from dinoseg.io import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("heads", help="supervised heads on frozen features: train | eval")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    t = verbs.add_parser(
        "train", help="train a head on labelled dataset folders",
        description="Config layers: code defaults <- --params FILE (section 'heads') <- flags "
        "<- KEY=VALUE overrides (any HeadTrainConfig field). The resolved config is saved in the "
        "output directory.",
    )  # fmt: skip
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--params", type=Path, default=None, help="YAML params file")
    t.add_argument("--data", action="append", default=None, metavar="DIR[:SPLIT]",
                   help="label source (repeatable, later ones win for the same image)")
    t.add_argument("--init", default=None, help="a head checkpoint to continue from")
    t.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    e = verbs.add_parser("eval", help="heads vs few-shot models on the same episodes")
    e.add_argument("--model", action="append", required=True, type=Path, metavar="HEAD_DIR",
                   help="a head checkpoint (repeatable)")
    e.add_argument("--fewshot", action="append", default=None, metavar="SPEC",
                   help="few-shot model to compare: prototype | knn | CKPT_DIR (repeatable; "
                   "default prototype)")
    e.add_argument("--memory", default=None, metavar="DIR",
                   help="a support memory directory attached to the few-shot models")
    e.add_argument("--fuse", type=float, action="append", default=None, metavar="W",
                   help="also W * head + (1 - W) * few-shot (first head, first few-shot model; "
                   "measured: 0.75), foreground above the measured fusion threshold")
    e.add_argument("--data", required=True, type=Path, help="dataset folder")
    e.add_argument("--split", default="val")
    which = e.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, default=None, help="the fold's novel classes")
    which.add_argument("--classes", default=None, help="comma-separated names or ids")
    e.add_argument("--shots", type=int, default=1)
    e.add_argument("--episodes", type=int, default=300)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--min-area", type=float, default=DEFAULT_MIN_AREA)
    e.add_argument("--backbone", default=None, help="few-shot models' backbone spec")
    e.add_argument("--image-size", type=int, default=None, help="few-shot models' long side")
    e.add_argument("--feature-cache", type=Path, default=None, metavar="DIR")
    e.add_argument("--out", required=True, type=Path, help="report JSON path")


def run(args: argparse.Namespace) -> int:
    return _train(args) if args.verb == "train" else _eval(args)


def _train(args: argparse.Namespace) -> int:
    import logging

    from dinoseg.config import load_params, parse_overrides, resolve
    from dinoseg.heads.train import HeadTrainConfig, train_head

    given: dict[str, Any] = {}
    if args.data:
        given["data"] = list(args.data)
    if args.init is not None:
        given["init"] = args.init
    cfg = resolve(HeadTrainConfig, load_params(args.params, "heads"), given,
                  parse_overrides(args.overrides))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = train_head(cfg, args.out)
    print(f"head written to {out}")
    print((out / "MODEL_CARD.md").read_text())
    return 0


def _episode_classes(args: argparse.Namespace, dataset: Any) -> list[int] | None:
    from dinoseg.data.folds import dataset_fold
    from dinoseg.eval.protocol import parse_classes

    if args.fold is not None:
        return list(dataset_fold(dataset.class_names, dataset.class_ids, args.fold).novel)
    if args.classes is not None:
        return parse_classes(args.classes, dataset.class_names)
    return None


def _learners(args: argparse.Namespace, cache: Any
              ) -> tuple[dict[str, Any], list[str], dict[str, float]]:
    """name -> learner (few-shot models, then heads); the head names; each one's threshold."""
    from dinoseg.checkpoint import read_config
    from dinoseg.feature_cache import CachedPredictor
    from dinoseg.heads.compare import fewshot_learner, head_learner
    from dinoseg.heads.predict import HeadPredictor
    from dinoseg.predictor import load_predictor

    learners: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    backbone = None
    for spec in args.fewshot or ["prototype"]:
        p = load_predictor(spec, backbone=args.backbone, image_size=args.image_size,
                           memory=args.memory)
        backbone = backbone or p.backbone
        name = spec + ("+memory" if args.memory else "")
        learners[name], thresholds[name] = fewshot_learner(CachedPredictor(p, cache)), p.threshold
    heads = []
    for d in args.model:
        if not d.is_dir():
            raise InputError(f"--model {d}: no such head checkpoint directory")
        config = read_config(d)
        same = backbone is not None and backbone.spec == config.backbone and list(
            backbone.layers) == list(config.layers)
        head = HeadPredictor.load(d, backbone if same else None, cache=cache)
        heads.append(f"head:{d.name}")
        learners[heads[-1]], thresholds[heads[-1]] = head_learner(head), head.threshold
    return learners, heads, thresholds


def _eval(args: argparse.Namespace) -> int:
    from dinoseg.data import EpisodeSampler, open_dataset
    from dinoseg.feature_cache import FeatureCache
    from dinoseg.heads.compare import Fusion, compare
    from dinoseg.heads.predict import FUSION_THRESHOLD

    if args.out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out}: give a report file name ending in .json")
    dataset = open_dataset(args.data, args.split)
    sampler = EpisodeSampler(dataset, _episode_classes(args, dataset), shots=args.shots,
                             n_episodes=args.episodes, seed=args.seed, min_area=args.min_area)
    cache = FeatureCache(disk_dir=args.feature_cache)
    learners, heads, thresholds = _learners(args, cache)
    fewshot = [n for n in learners if n not in heads]
    fusions = {f"{heads[0]}*{w:g}+{fewshot[0]}": Fusion(heads[0], fewshot[0], w)
               for w in args.fuse or []}
    thresholds |= dict.fromkeys(fusions, FUSION_THRESHOLD)
    report = compare(learners, sampler, dataset.class_names, fusions=fusions,
                     thresholds=thresholds, progress=True)
    report["thresholds"] = thresholds
    report["settings"] = {"data": str(args.data), "split": args.split, "fold": args.fold,
                          "classes": args.classes, "shots": args.shots, "seed": args.seed,
                          "min_area": args.min_area}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for name, m in report["models"].items():
        per = ", ".join(f"{v['name']} {v['iou']:.1f}" for v in m["per_class"].values()
                        if v["iou"] is not None)
        print(f"{name:40s} mIoU {m['miou']:5.1f}  FB-IoU {m['fb_iou']:5.1f}  | {per}")
    return 0
