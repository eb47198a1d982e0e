"""``dinoseg train``: episodic meta-training of a segmenter on base classes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dinoseg.device import DEVICE_HELP, check_device_name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="meta-train a segmenter on a dataset's base classes",
        description="Config layers: code defaults <- --params FILE (section 'train') <- flags "
        "<- KEY=VALUE overrides. The resolved config is saved in the output directory.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any TrainConfig field")
    p.add_argument("--params", type=Path, default=None, help="YAML params file")
    p.add_argument("--data", default=None, help="dataset root (folder format)")
    p.add_argument("--fold", type=int, default=None, help="fold whose novel classes are held out")
    p.add_argument("--init", default=None, help="distilled checkpoint to start the adapter from")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint directory to write (default: runs/train/DATA-foldF, named "
                   "by the dataset folder and the fold)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--smoke", action="store_true", help="a tiny schedule (under a minute)")


def default_out(data: str, fold: int) -> Path:
    """``runs/train/<dataset folder name>-fold<f>``: one checkpoint directory per fold."""
    return Path("runs") / "train" / f"{Path(data).resolve().name}-fold{fold}"


def run(args: argparse.Namespace) -> int:
    from dinoseg.config import resolve_cli
    from dinoseg.train.loop import TrainConfig
    from dinoseg.train.run import run_training

    cfg = resolve_cli(TrainConfig, args, "train", ("data", "fold", "init", "device"))
    check_device_name(cfg.device)  # before any data is read
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = run_training(cfg, args.out or default_out(cfg.data, cfg.fold))
    print(f"checkpoint written to {out}")
    print((Path(out) / "MODEL_CARD.md").read_text())
    return 0
