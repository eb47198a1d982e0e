"""``dinoseg models``: the registered architectures and their trainable parameters."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list segmenter architectures with parameter counts")
    p.add_argument("name", nargs="?", default=None, help="show one architecture part by part")


def summary(name: str) -> list[tuple[str, int]]:
    """``[(part, trainable parameters), ..., ("total", n)]`` of a registered architecture."""
    from dinoseg.models import build_segmenter, count_parameters

    model = build_segmenter(name)
    rows = [(part, count_parameters(module)) for part, module in model.named_children()]
    return [*rows, ("total", count_parameters(model))]


def run(args: argparse.Namespace) -> int:
    from dinoseg.models import SEGMENTER_REGISTRY

    names = [args.name] if args.name else list(SEGMENTER_REGISTRY)
    if args.name and args.name not in SEGMENTER_REGISTRY:
        from dinoseg.io import InputError

        raise InputError(f"unknown model {args.name!r}; known: {', '.join(SEGMENTER_REGISTRY)}")
    for name in names:
        rows = summary(name)
        print(f"{name:<20} {rows[-1][1]:>12,} trainable parameters")
        if args.name:
            for part, n in rows[:-1]:
                print(f"  {part:<12} {n:>12,}")
    return 0
