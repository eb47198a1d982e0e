"""``dinoseg split``: hold back a validation split (symlinks) from a one-split dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="make train/val splits (symlinks) from a one-split dataset")
    p.add_argument("--data", type=Path, required=True, help="source dataset root (folder format)")
    p.add_argument("--out", type=Path, required=True, help="new dataset root to write")
    p.add_argument("--split", default="train", help="source split to divide (default train)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share held back (0.2)")
    p.add_argument("--seed", type=int, default=0, help="changes which images are held back")


def run(args: argparse.Namespace) -> int:
    from dinoseg.data.split import split_dataset

    counts = split_dataset(args.data, args.out, split=args.split,
                           val_fraction=args.val_fraction, seed=args.seed)
    print(f"{args.out}: train {counts['train']} images, val {counts['val']} images (symlinks)")
    return 0
