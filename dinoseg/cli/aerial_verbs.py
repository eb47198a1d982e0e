"""``dinoseg aerial train`` and ``dinoseg aerial eval`` (``map`` is :mod:`dinoseg.cli.aerial`).

``train`` writes a head checkpoint directory (:func:`dinoseg.aerial.train.train_aerial_head`);
``eval`` runs one method over a labelled folder split and writes a JSON report
(:func:`dinoseg.aerial.evaluate.evaluate_method`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dinoseg.io import InputError


def add_train(verbs: argparse._SubParsersAction) -> None:
    t = verbs.add_parser(
        "train", help="train a light supervised head on DINOv2 tiles (frozen | finetune | "
        "progressive)",
        description="Config layers: code defaults <- --params FILE (section 'aerial_train') <- "
        "flags <- KEY=VALUE overrides (any AerialTrainConfig field). Writes the checkpoint "
        "directory (head, tuned blocks, pixel head, metrics, MODEL_CARD.md, "
        "resolved_config.json).",
    )  # fmt: skip
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--data", action="append", default=None, metavar="DIR[:SPLIT]",
                   help="labelled folder (Dubai layout; repeatable, later ones win for the same "
                   "image; default split train)")
    t.add_argument("--strategy", choices=("frozen", "finetune", "progressive"), default=None)
    t.add_argument("--kind", choices=("linear", "mlp", "conv"), default=None,
                   help="head: linear, MLP or 3x3 conv (the small CNN)")
    t.add_argument("--augment", default=None, metavar="LIST",
                   help="augmentation views: crop,rotate,jitter,blur | all | none")
    t.add_argument("--params", type=Path, default=None, help="YAML params file")
    t.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")


def add_eval(verbs: argparse._SubParsersAction) -> None:
    from dinoseg.cli.aerial_method import add_method_args

    e = verbs.add_parser(
        "eval", help="score a method on a labelled folder (IoU, boundary F1, safety, s/MP)",
        description="Runs the method exactly as `dinoseg aerial` does over every image of "
        "DIR/SPLIT and writes per-class IoU, mIoU, boundary F1, pixel accuracy, the safety "
        "rates (road false negatives, water false positives), s/MP and peak RSS.",
    )  # fmt: skip
    e.add_argument("--data", required=True, type=Path, help="labelled folder (Dubai layout)")
    e.add_argument("--split", default="val")
    e.add_argument("--only", nargs="+", default=(), metavar="SUFFIX",
                   help="only images whose stem ends with one of these (e.g. part_001)")
    e.add_argument("--out", required=True, type=Path, help="report JSON path")
    add_method_args(e)


def run_verb(args: argparse.Namespace) -> int:
    return _train(args) if args.verb == "train" else _eval(args)


def _train(args: argparse.Namespace) -> int:
    import logging

    from dinoseg.aerial.train import AerialTrainConfig, train_aerial_head
    from dinoseg.config import load_params, parse_overrides, resolve

    given: dict[str, Any] = {}
    if args.data:
        given["data"] = list(args.data)
    for key in ("strategy", "kind", "augment"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    cfg = resolve(AerialTrainConfig, load_params(args.params, "aerial_train"), given,
                  parse_overrides(args.overrides))  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def on_eval(record: dict[str, Any]) -> None:
        print(json.dumps(record), file=sys.stderr, flush=True)

    out = train_aerial_head(cfg, args.out, on_eval=on_eval)
    print(f"head written to {out}")
    print((out / "MODEL_CARD.md").read_text())
    return 0


def _eval(args: argparse.Namespace) -> int:
    from dinoseg.aerial.build import build_method
    from dinoseg.aerial.evaluate import evaluate_method, write_report
    from dinoseg.cli.aerial_method import method_config

    if args.out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out}: give a report file name ending in .json")
    if not (args.data / "classes.json").is_file():
        raise InputError(f"--data {args.data}: no classes.json (a labelled dataset folder)")
    cfg, names, supports = method_config(args)
    method = build_method(cfg, supports, names)

    def progress(stage: str, done: int, total: int) -> None:
        print(f"\r{stage}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr,
              flush=True)  # fmt: skip

    report = evaluate_method(method, cfg, args.data, args.split, only=args.only,
                             progress=progress)  # fmt: skip
    report["settings"] = {"model": cfg.model, "refine": cfg.refine, "tile": cfg.tile,
                          "overlap": cfg.overlap, "image_size": cfg.image_size,
                          "supports": [list(map(str, s)) for s in args.support], "only":
                          list(args.only)}  # fmt: skip
    write_report(report, args.out)
    per = ", ".join(f"{c} {v['iou']:.1f}" for c, v in report["per_class"].items()
                    if v["iou"] is not None)  # fmt: skip
    road = report["safety"]["fnr"]
    print(f"{report['method']}: mIoU {report['miou']:.1f} | {per} | boundary F1 "
          f"{report['boundary_f1']:.1f} | accuracy {report['pixel_accuracy']:.1f} | FNR "
          f"{road} | {report['cpu_s_per_mp']:.1f} CPU s/MP")  # fmt: skip
    return 0
