"""From an aerial photo to a city map: segmentation by one method, refinement, outputs.

``run_aerial`` = tiled segmentation by one method -> optional SAM refinement -> small-segment
removal and majority smoothing -> ``OUT/`` with:

- ``classes.png``  class raster (uint8 class indices, 255 = unknown), full resolution;
- ``map.png``      coloured map with a legend (subsampled to ``preview_max_side``);
- ``stats.json``   per-class pixels / share / area in m², buildings, timings;
- ``city.glb``     the 3D city model (:mod:`dinoseg.aerial.mesh`);
- ``resolved_config.json``.

Outputs are written to a hidden folder inside ``OUT`` and moved in place only when all of
them are complete, so a failure leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dinoseg.aerial.build import build_method, check_method
from dinoseg.aerial.categories import categories_for
from dinoseg.aerial.citymap import area_stats, map_with_legend
from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.features import Supports
from dinoseg.aerial.methods.base import AerialMethod
from dinoseg.aerial.postprocess import postprocess
from dinoseg.aerial.reader import ImageSource, as_source, open_large_image
from dinoseg.aerial.refine import RefineSettings, refine_labels
from dinoseg.io import InputError, load_image, load_label_map

OUTPUT_FILES = ("classes.png", "map.png", "stats.json", "city.glb", "resolved_config.json")
Progress = Callable[[str, int, int], None]


def load_supports(
    pairs: Sequence[Sequence[str | Path]], class_names: list[str]
) -> Supports:
    """Support tiles from ``(image, class-index mask PNG)`` file pairs."""
    images, labels = [], []
    for img_path, mask_path in pairs:
        img = load_image(img_path)
        lab = load_label_map(mask_path)
        if lab.shape != img.shape[:2]:
            raise InputError(
                f"{mask_path}: mask is {lab.shape[1]}x{lab.shape[0]} but its image is "
                f"{img.shape[1]}x{img.shape[0]}; they must match"
            )
        images.append(img)
        labels.append(lab)
    return Supports(images, labels, list(class_names))


def refine_settings(cfg: AerialConfig, class_names: list[str]) -> RefineSettings:
    """The refinement settings of a config. ``refine_classes`` names absent from
    ``class_names`` are skipped; when none is present (e.g. unnamed k-means clusters), every
    class is refined."""
    index = {n.lower(): i for i, n in enumerate(class_names)}
    labels = tuple(index[n.lower()] for n in cfg.refine_classes if n.lower() in index)
    return RefineSettings(
        block=cfg.refine_block, band=cfg.refine_band, min_iou=cfg.refine_min_iou,
        min_area=max(cfg.min_area, 16), labels=labels,
    )


def segment_map(
    source: ImageSource,
    method: AerialMethod,
    cfg: AerialConfig,
    *,
    sam: Any = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Segment, refine (if configured) and post-process; returns labels and timings (s)."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    labels = method.segment(
        source, progress=None if progress is None else lambda d, n: progress("segment", d, n)
    )
    timings["segment_s"] = time.perf_counter() - t
    if cfg.refine:
        from dinoseg.aerial.sam import load_sam

        t = time.perf_counter()
        model = sam if sam is not None else load_sam(cfg.sam_model, cfg.sam_checkpoint or None)
        refine_labels(
            source, labels, model, refine_settings(cfg, method.class_names),
            progress=None if progress is None else lambda d, n: progress("refine", d, n),
        )
        timings["refine_s"] = time.perf_counter() - t
    t = time.perf_counter()
    postprocess(labels, min_area=cfg.min_area, smooth_iterations=cfg.smooth_iterations)
    timings["postprocess_s"] = time.perf_counter() - t
    return labels, timings


def write_outputs(
    labels: np.ndarray, class_names: list[str], cfg: AerialConfig, out_dir: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the five output files into ``out_dir`` (all or none); returns the stats."""
    from dinoseg.aerial.mesh import MeshSettings, city_scene, export_glb

    categories = categories_for(class_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".aerial-", dir=out_dir))
    try:
        stats = area_stats(labels, categories, cfg.pixel_size)
        Image.fromarray(np.ascontiguousarray(labels, np.uint8)).save(tmp / "classes.png")
        map_with_legend(labels, categories, stats, max_side=cfg.preview_max_side).save(
            tmp / "map.png"
        )
        mesh = MeshSettings(
            cells=cfg.mesh_cells, pixel_size=cfg.pixel_size, height_rule=cfg.height_rule,
            building_height=cfg.building_height,
        )
        scene = city_scene(labels, categories, mesh)
        export_glb(scene, tmp / "city.glb")
        stats["buildings"] = int(scene.metadata.get("buildings", 0))
        stats.update(extra or {})
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        (tmp / "resolved_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        for name in OUTPUT_FILES:
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


def run_aerial(
    image: str | Path | np.ndarray | ImageSource,
    supports: Supports | None,
    class_names: list[str],
    cfg: AerialConfig,
    out_dir: str | Path,
    *,
    method: AerialMethod | None = None,
    sam: Any = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole job (see the module docstring); returns the stats written to ``stats.json``."""
    check_method(cfg.method)
    cfg.check()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    source = (
        open_large_image(image, max_pixels=cfg.max_pixels)
        if isinstance(image, (str, Path)) else as_source(image)
    )
    if method is None:
        method = build_method(cfg, supports, class_names)
    labels, timings = segment_map(source, method, cfg, sam=sam, progress=progress)
    total = sum(timings.values())
    extra = {
        "method": method.name,
        "shots": 0 if supports is None else len(supports.images),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "seconds_per_megapixel": round(total / source.megapixels, 3),
        **method.details(),
    }
    return write_outputs(labels, method.class_names, cfg, out, extra)
