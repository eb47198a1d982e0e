"""Stage ``memory``: the support memory of the training set (:mod:`dinoseg.memory`).

Every labelled image of ``data/train_set``'s train split (the base dataset and the annotators'
training labels) becomes an example of its classes, encoded as the served model encodes
(``memory`` section: block, working size). The output ``pipeline/memory/`` is persisted
between runs and brought up to date (unchanged images are not encoded again). Its content
version is a function of the labels and the encoder, the same as the workers' memory built from
the same labels; the evaluation records it. Writes ``metrics/memory.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass

from dinoseg.config import resolve
from mlops.pipeline import MEMORY, METRICS, TRAIN_SET, section, stage_main

log = logging.getLogger("mlops.memory")


@dataclass
class MemoryConfig:
    """``params.yaml`` section ``memory``."""

    backbone: str = "packaged:dinov2-s"  # the served model's (train.backbone)
    layer: int = 10
    image_size: int = 336


def run() -> None:
    """The stage (see the module docstring)."""
    from dinoseg.backbone import load_backbone
    from dinoseg.memory import MemoryEncoder, Source, build_memory
    from mlops.tracking import stage_run

    cfg = resolve(MemoryConfig, section("memory"))
    with stage_run("memory", dataclasses.asdict(cfg)) as run:
        backbone = load_backbone(cfg.backbone, layers=(cfg.layer,))
        encoder = MemoryEncoder(backbone, image_size=cfg.image_size, layer=cfg.layer)
        memory, stats = build_memory(MEMORY, [Source(TRAIN_SET, "train")], encoder)
        numbers = {**dataclasses.asdict(stats), "images": len(memory)}
        numbers.pop("skipped_sources", None)
        METRICS.mkdir(parents=True, exist_ok=True)
        (METRICS / "memory.json").write_text(json.dumps(numbers, indent=1) + "\n")
        run.log_metrics(numbers)
        run.set_tags({"memory_version": memory.version})
        log.info("memory %s: %s", memory.version, numbers)


if __name__ == "__main__":
    stage_main(run)
