"""``dinoseg aerial eval``: one method over a labelled folder split, scored like a map.

Every image of ``ROOT/<split>`` (or those whose stem ends with one of ``only``) goes through the
same path as ``dinoseg aerial`` (tiling, blending, optional SAM refinement, post-processing:
:func:`dinoseg.aerial.pipeline.segment_map`); the map is compared with the mask, pixels
labelled 255 (or the folder's ignore value) left out. Predicted classes are matched to the
folder's classes by name; unknown (255) and classes the folder lacks count as wrong.

Report (percent): per class IoU, boundary F1 (2 px tolerance,
:class:`dinoseg.metrics.SegmentationMeter`), false-negative rate (share of the class's pixels
given another label) and false-positive rate (share of other pixels given the class); mIoU,
mean boundary F1, pixel accuracy; the **safety** figures: FNR of the config's
``safety_classes`` (default road: road taken for non-road) and FPR of the ``hazards``
(default water: land or roofs mapped as water); the confusion matrix; per image the accuracy
and the class shares, predicted and true; time (wall and process CPU s/MP) and the process's
peak RSS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.methods.base import AerialMethod
from dinoseg.data.classnames import normalize_class_name
from dinoseg.io import InputError

IGNORE = 255


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process (VmHWM) in MB, ``None`` where unknown."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def select_stems(root: Path, split: str, only: Sequence[str] = ()) -> list[str]:
    """Stems of ``ROOT/<split>`` (ending with one of ``only`` when given), sorted."""
    from dinoseg.data.folder import list_pairs

    stems = [s for s, _, _ in list_pairs(Path(root) / split)]
    kept = [s for s in stems if not only or s.endswith(tuple(only))]
    if not kept:
        raise InputError(f"{root}/{split}: no image stem ends with {list(only)}")
    return kept


def support_tiles(root: str | Path, split: str, shots: int, *, seed: int = 0,
                  min_share: float = 0.005) -> list[tuple[Path, Path]]:
    """``(image, mask)`` of ``shots`` tiles of ``ROOT/<split>`` in which every class covers at
    least ``min_share`` of the labelled pixels, in a seeded order (bench/aerial_compare.py's
    pick: the first one is the 1-shot support)."""
    from dinoseg.aerial.categories import read_class_names
    from dinoseg.data.folder import list_pairs
    from dinoseg.io import load_label_map

    n = len(read_class_names(root))
    good = []
    for _, image, mask in list_pairs(Path(root) / split):
        lab = load_label_map(mask)
        counts = np.bincount(lab[lab != IGNORE].ravel(), minlength=n)[:n]
        if counts.sum() and (counts >= min_share * counts.sum()).all():
            good.append((image, mask))
    if len(good) < shots:
        raise InputError(f"{root}/{split}: {len(good)} tiles show every class, {shots} wanted")
    order = np.random.default_rng(seed).permutation(len(good))
    return [good[i] for i in order[:shots]]


def label_map(method_names: Sequence[str], folder_names: Sequence[str]) -> np.ndarray:
    """(256,) method label -> folder class index by name (``n`` = wrong: unknown, other)."""
    n = len(folder_names)
    index = {normalize_class_name(c): i for i, c in enumerate(folder_names)}
    lut = np.full(256, n, np.int64)
    for k, name in enumerate(method_names):
        lut[k] = index.get(normalize_class_name(name), n)
    if not (lut[: len(method_names)] < n).any():
        raise InputError(f"the method's classes {list(method_names)} share no name with the "
                         f"dataset's {list(folder_names)}")
    return lut


def _image_record(stem: str, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray,
                  names: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    n = len(names)
    total = max(1, int(valid.sum()))
    p = np.bincount(pred[valid], minlength=n + 1)
    t = np.bincount(gt[valid], minlength=n)
    return {"stem": stem, "accuracy": float(100 * (pred[valid] == gt[valid]).mean())
            if valid.any() else None,
            "predicted_share": {c: float(100 * p[i] / total) for i, c in enumerate(names)},
            "true_share": {c: float(100 * t[i] / total) for i, c in enumerate(names)}}


def summarise(conf: np.ndarray, meter: Any, names: Sequence[str], safety: Sequence[str],
              hazards: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """The report's scores from the confusion (n x n+1) and the per-class meter."""
    summary = meter.summary()
    n = len(names)
    tp = np.diag(conf[:, :n]).astype(float)
    union = conf.sum(1) + conf[:, :n].sum(0) - tp
    per_class: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        rates = summary["safety"].get(str(i), {})
        per_class[name] = {
            "iou": float(100 * tp[i] / union[i]) if union[i] else None,
            "boundary_f1": summary["per_class"].get(str(i), {}).get("boundary_f1"),
            "fnr": rates.get("fnr"), "fpr": rates.get("fpr"), "pixels": int(conf[i].sum()),
        }  # fmt: skip
    ious = [v["iou"] for v in per_class.values() if v["iou"] is not None]
    valid = conf.sum()
    return {
        "per_class": per_class,
        "miou": float(np.mean(ious)) if ious else None,
        "boundary_f1": summary["boundary_f1"],
        "pixel_accuracy": float(100 * tp.sum() / valid) if valid else None,
        "safety": {"fnr": {c: per_class[c]["fnr"] for c in safety if c in per_class},
                   "hazard_fpr": {c: per_class[c]["fpr"] for c in hazards if c in per_class}},
        "confusion": conf.tolist(),
    }


def _read_pair(split_dir: Path, stem: str, max_pixels: int) -> tuple[Any, np.ndarray]:
    """The image ``<split>/images/<stem>.*`` opened as a large image (its ``shape`` (H, W))
    and its (H, W) label map ``<split>/masks/<stem>.png``; :class:`InputError` when the sizes
    differ."""
    from dinoseg.aerial.reader import open_large_image
    from dinoseg.io import load_label_map

    image_file = next(p for p in (split_dir / "images").glob(f"{stem}.*"))
    source = open_large_image(image_file, max_pixels=max_pixels)
    gt = load_label_map(split_dir / "masks" / f"{stem}.png")
    if gt.shape != source.shape:
        raise InputError(f"{stem}: mask {gt.shape[::-1]} but image {source.shape[::-1]}")
    return source, gt


def _timed_segment(source: Any, method: AerialMethod, cfg: AerialConfig,
                   sam: Any) -> tuple[np.ndarray, float, float]:  # fmt: skip
    """:func:`~dinoseg.aerial.pipeline.segment_map`'s (H, W) labels, with its wall and process
    CPU seconds."""
    from dinoseg.aerial.pipeline import segment_map

    t, c = time.perf_counter(), time.process_time()
    labels, _ = segment_map(source, method, cfg, sam=sam)
    return labels, time.perf_counter() - t, time.process_time() - c


def _score(stem: str, pred: np.ndarray, gt: np.ndarray, ignore: int | None, conf: np.ndarray,
           meter: Any) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Add one map to the confusion ``conf`` (n, n + 1) and to ``meter``, in place.

    Args:
        pred: (H, W) folder class indices (``n``: wrong).
        gt: (H, W) label map (255 or ``ignore``: unlabelled).

    Returns:
        ``gt`` with its unlabelled pixels at 0, and the (H, W) bool labelled pixels.
    """
    n = conf.shape[0]
    unlabelled = (gt == IGNORE) | (gt == (IGNORE if ignore is None else ignore))
    bad = np.unique(gt[~unlabelled & ((gt < 0) | (gt >= n))])
    if bad.size:
        raise InputError(f"{stem}: mask values {bad.tolist()[:5]} are not classes 0..{n - 1}")
    valid = ~unlabelled
    gt = np.where(valid, gt, 0)
    conf += np.bincount(gt[valid] * (n + 1) + pred[valid],
                        minlength=n * (n + 1)).reshape(n, n + 1)  # fmt: skip
    for i in range(n):
        target = np.where(valid, (gt == i).astype(np.uint8), IGNORE).astype(np.uint8)
        meter.update(pred == i, target, i)
    return gt, valid


def evaluate_method(
    method: AerialMethod,
    cfg: AerialConfig,
    root: str | Path,
    split: str,
    *,
    only: Sequence[str] = (),
    sam: Any = None,
    hazards: Sequence[str] = ("water",),
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run ``method`` over a labelled split and score it (see the module docstring)."""
    from dinoseg.aerial.categories import read_class_names
    from dinoseg.data.folder import read_classes
    from dinoseg.metrics import SegmentationMeter

    root = Path(root)
    names = read_class_names(root)
    ignore = read_classes(root).ignore_index
    n = len(names)
    lut = label_map(method.class_names, names)
    stems = select_stems(root, split, only)
    if cfg.refine and sam is None:
        from dinoseg.aerial.sam import load_sam

        sam = load_sam(cfg.sam_model, cfg.sam_checkpoint or None)  # once, not per image
    meter = SegmentationMeter(class_names=dict(enumerate(names)), safety_classes=range(n))
    conf = np.zeros((n, n + 1), np.int64)
    images, seconds, cpu, mp = [], 0.0, 0.0, 0.0
    split_dir = root / split
    for k, stem in enumerate(stems):
        source, gt = _read_pair(split_dir, stem, cfg.max_pixels)
        labels, wall, proc = _timed_segment(source, method, cfg, sam)
        seconds += wall
        cpu += proc
        mp += source.megapixels
        pred = lut[labels]
        gt, valid = _score(stem, pred, gt, ignore, conf, meter)
        images.append(_image_record(stem, pred, gt, valid, names))
        if progress:
            progress("images", k + 1, len(stems))
    report = summarise(conf, meter, names, cfg.safety_classes, hazards)
    report.update({
        "method": method.name, "data": str(root), "split": split, "classes": names,
        "images": images, "megapixels": mp, "seconds": seconds, "cpu_seconds": cpu,
        "s_per_mp": seconds / mp, "cpu_s_per_mp": cpu / mp, "peak_rss_mb": peak_rss_mb(),
        "boundary_tolerance_px": meter.boundary_tolerance,
    })  # fmt: skip
    return report


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report JSON (its folder created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    return out
