"""``dinoseg distill``: coarse-to-fine distillation of the adapter from a SAM teacher."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dinoseg.device import DEVICE_HELP, check_device_name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="distil the embedding adapter from a SAM-family teacher",
        description="Config layers: code defaults <- --params FILE (section 'distill') <- flags "
        "<- KEY=VALUE overrides. The resolved config is saved in the output directory.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any DistillConfig field")
    p.add_argument("--params", type=Path, default=None, help="YAML params file")
    p.add_argument("--data", default=None, help="dataset root (folder format)")
    p.add_argument("--teacher", default=None,
                   help="litemedsam (packaged, default) | mobilesam | sam_vit_b/l/h")
    p.add_argument("--teacher-checkpoint", default=None, help="checkpoint path for the teacher")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--smoke", action="store_true", help="a tiny schedule (tests)")


def run(args: argparse.Namespace) -> int:
    from dinoseg.config import resolve_cli
    from dinoseg.distill.loop import DistillConfig
    from dinoseg.distill.run import run_distillation

    cfg = resolve_cli(DistillConfig, args, "distill",
                      ("data", "teacher", "teacher_checkpoint", "device"))
    check_device_name(cfg.device)  # before the teacher runs
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = run_distillation(cfg, args.out)
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"distilled checkpoint written to {out}")
    print(json.dumps({k: metrics[k] for k in ("val_distilled", "val_untrained")}))
    return 0
