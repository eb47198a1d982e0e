"""The docs/aerial.md tables of bench/aerial_heads.py, from its reports (``python
bench/aerial_heads.py table``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CLASSES = ("land", "water", "building", "vegetation", "road")
ROWS = (  # report name -> row label
    ("fewshot-1", "few-shot, 1 support tile"),
    ("fewshot-5", "few-shot, 5 support tiles"),
    ("kmeans-5", "DINOv2 + k-means, named by 5 supports"),
    ("sam-match-5", "DINOv2 + SAM masks (LiteMedSAM), 5 supports"),
    ("fewshot-5+refine", "few-shot 5 + SAM refinement"),
    ("linear", "head-frozen, linear"),
    ("linear+aug", "head-frozen, linear + aug"),
    ("linear+aug+tta4", "head-frozen, linear + aug, 4 test views"),
    ("linear+aug+tta8", "head-frozen, linear + aug, 8 test views"),
    ("linear+aug+bal1", "head-frozen, linear + aug, inverse-frequency class weights"),
    ("linear+aug+bal1+tta8", "head-frozen, linear + aug, inverse-frequency weights, 8 views"),
    ("linear+aug+bal1+s784", "head-frozen, linear + aug, inverse-frequency weights, 1.5x scale"),
    ("linear+aug+b11", "head-frozen, linear + aug, blocks 6-11"),
    ("cnn", "head-frozen, small CNN (3x3 conv)"),
    ("cnn+aug", "head-frozen, small CNN + aug"),
    ("finetune", "head-finetune (blocks 9-10), linear"),
    ("finetune+aug", "head-finetune, linear + aug"),
    ("progressive", "head-progressive (10, then 9), linear"),
    ("progressive+aug", "head-progressive, linear + aug"),
)


def _f(v: Any, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _train_time(out: Path, name: str) -> str:
    base = name.split("+refine")[0].split("@")[0]
    f = out / "heads" / base / "bench_time.json"
    if not f.is_file():
        return ""
    t = json.loads(f.read_text())
    return f"{t['wall_s'] / 60:.1f} / {t['cpu_s'] / 60:.1f}"


def row(label: str, r: dict[str, Any], train: str = "") -> str:
    pc = r["per_class"]
    ious = " | ".join(_f(pc[c]["iou"]) for c in CLASSES)
    safety = r["safety"]
    return (f"| {label} | {ious} | **{_f(r['miou'])}** | {_f(r['boundary_f1'])} | "
            f"{_f(r['pixel_accuracy'])} | {_f(safety['fnr'].get('road'))} | "
            f"{_f(safety['hazard_fpr'].get('water'))} | {_f(r['cpu_s_per_mp'])} | "
            f"{_f(r['peak_rss_mb'], 0)} | {train} |")


def print_tables(out: Path, suffix: str, scene: tuple[str, Sequence[str]],
                 seeded: Mapping[str, Sequence[int]]) -> None:  # fmt: skip
    """Every table whose reports exist; ``scene``: the scene runs' recipe and val parts,
    ``seeded``: recipe -> its extra seeds (bench/aerial_heads.py's SCENE_* and SEEDED)."""
    reports = out / "reports"
    print("| method | land | water | building | vegetation | road | mIoU | boundary F1 | "
          "pixel acc. | road FNR | water FPR | CPU s/MP | peak RSS MB | train min wall / CPU |")
    print("|" + "---|" * 14)
    for name, label in ROWS:
        for extra, tag in (("", ""), ("+refine", " + SAM refinement")):
            if name.endswith("+refine") and extra:
                continue
            f = reports / f"{name}{extra}{suffix}.json"
            if f.is_file():
                r = json.loads(f.read_text())
                print(row(label + tag, r, _train_time(out, name)))
    print()
    print("| labelled tiles | head-frozen mIoU | few-shot mIoU (same tiles as supports) | "
          "head road FNR | few-shot road FNR |")
    print("|---|---|---|---|---|")
    for n in (1, 3, 9, 27):
        h, s = reports / f"curve-head-{n}{suffix}.json", reports / f"curve-fewshot-{n}{suffix}.json"
        if h.is_file() and s.is_file():
            rh, rs = json.loads(h.read_text()), json.loads(s.read_text())
            print(f"| {n} | {_f(rh['miou'])} | {_f(rs['miou'])} | "
                  f"{_f(rh['safety']['fnr'].get('road'))} | "
                  f"{_f(rs['safety']['fnr'].get('road'))} |")
    _scene_table(reports, suffix, *scene)
    _seed_table(reports, seeded)


def _scene_table(reports: Path, suffix: str, variant: str, parts: Sequence[str]) -> None:
    """The ``scene`` runs beside their recipe trained on the train images alone."""
    print()
    print("| val-scene images labelled per val tile | views | land | water | building | "
          "vegetation | road | mIoU | road FNR |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in range(len(parts) + 1):
        for tta in ("", "+tta8"):
            name = (f"scene{n}" if n else variant) + tta
            f = reports / f"{name}{suffix}.json"
            if f.is_file():
                r = json.loads(f.read_text())
                ious = " | ".join(_f(r["per_class"][c]["iou"]) for c in CLASSES)
                print(f"| {n} | {8 if tta else 1} | {ious} | {_f(r['miou'])} | "
                      f"{_f(r['safety']['fnr'].get('road'))} |")


def _seed_table(reports: Path, seeded: Mapping[str, Sequence[int]]) -> None:
    """Each seeded recipe: mIoU and road FNR per seed (0, then its ``+seedN`` runs) on the gate's
    images, the reported ones and those with 8 test views, and the mean over the seeds."""
    print()
    print("| recipe | gate mIoU | gate road FNR | mIoU | road FNR | 8 views: mIoU | road FNR |")
    print("|---|---|---|---|---|---|---|")
    for name, seeds in seeded.items():
        names = [name] + [f"{name}+seed{s}" for s in seeds]
        cells = []
        for suffix in ("@gate", "", "+tta8"):
            found = [reports / f"{n}{suffix}.json" for n in names]
            rs = [json.loads(f.read_text()) for f in found if f.is_file()]
            for values in ([r["miou"] for r in rs],
                           [r["safety"]["fnr"].get("road") for r in rs]):  # fmt: skip
                mean = sum(values) / len(values) if values else None
                cells.append(" / ".join(_f(v) for v in values) + f" ({_f(mean)})" if values
                             else "–")  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
