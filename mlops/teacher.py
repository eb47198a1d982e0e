"""Stage ``teacher``: the SAM teacher's embeddings of the images distillation will use.

Reads ``params.yaml`` ``distill`` (teacher, its checkpoint/options, ``max_images``,
``max_val_images``, splits). Writes ``pipeline/teacher/``:

- ``subset/``: a dataset folder with the first ``max_images`` training and ``max_val_images``
  validation pairs of the base dataset (``prepare.base``; 0 = all), the images ``distill``
  reads (labels are not used by distillation, so annotators' labels never rerun it);
- ``embeddings/``: :func:`dinoseg.teachers.cache.cached_embeddings` files for them.

The output persists between runs (``persist: true`` in ``dvc.yaml``): embeddings already there
are reused, only new images go through the teacher, and entries of images no longer used are
removed.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

from dinoseg.config import resolve
from dinoseg.data import FolderDataset
from dinoseg.distill.loop import DistillConfig
from mlops.merge import link, write_classes
from mlops.pipeline import TEACHER, section, stage_main

log = logging.getLogger("mlops.teacher")
SUBSET = TEACHER / "subset"
EMBEDDINGS = TEACHER / "embeddings"


def build_subset(src: Path, out: Path, cfg: DistillConfig) -> list[Path]:
    """Link the distillation pairs of ``src`` into ``out`` (rebuilt); returns the images."""
    shutil.rmtree(out, ignore_errors=True)
    images = []
    for split, limit in ((cfg.split, cfg.max_images), (cfg.val_split, cfg.max_val_images)):
        ds = FolderDataset(src, split)
        stems = ds.stems[:limit] if limit > 0 else ds.stems
        for stem in stems:
            image = ds.image_path(stem)
            link(image, out / split / "images" / image.name)
            link(ds.mask_path(stem), out / split / "masks" / f"{stem}.png")
            images.append(image)
    info = FolderDataset(src, cfg.split).info
    write_classes(out, dict(info.names), info)
    return images


def cache_embeddings(cfg: DistillConfig, images: list[Path], cache: Path) -> dict[str, float]:
    """Teacher embeddings of ``images`` into ``cache``; stale entries removed. Returns counts."""
    from dinoseg.io import load_image
    from dinoseg.teachers import build_teacher
    from dinoseg.teachers.cache import cached_embeddings, embedding_key

    teacher = build_teacher(cfg.teacher, checkpoint=cfg.teacher_checkpoint or None,
                            **cfg.teacher_options)
    keep, computed = set(), 0
    start = time.perf_counter()
    for i, path in enumerate(images):
        image = load_image(path)
        key = embedding_key(teacher, image)
        computed += not (cache / key[:2] / f"{key}.safetensors").is_file()
        cached_embeddings(teacher, [image], cache)  # one at a time: no (N, 256, 64, 64) stack
        keep.add(f"{key}.safetensors")
        if (i + 1) % 10 == 0:
            log.info("teacher: %d / %d images (%d computed)", i + 1, len(images), computed)
    stale = [f for f in cache.rglob("*") if f.is_file() and f.name not in keep]
    for f in stale:
        f.unlink()
    return {"images": len(images), "computed": computed, "reused": len(images) - computed,
            "removed": len(stale), "seconds": time.perf_counter() - start}


def run() -> None:
    """The stage (see the module docstring)."""
    import torch

    from mlops.tracking import stage_run

    cfg = resolve(DistillConfig, section("distill"))
    torch.set_num_threads(cfg.threads)
    fields = ("teacher", "teacher_checkpoint", "teacher_options", "split", "val_split",
              "max_images", "max_val_images")
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k in fields}
    with stage_run("teacher", params) as run:
        base = Path(str(section("prepare").get("base") or "../shared/data/camvid"))
        images = build_subset(base, SUBSET, cfg)
        EMBEDDINGS.mkdir(parents=True, exist_ok=True)
        counts = cache_embeddings(cfg, images, EMBEDDINGS)
        run.log_metrics(counts)
        log.info("teacher %s: %s", cfg.teacher, counts)


if __name__ == "__main__":
    stage_main(run)
