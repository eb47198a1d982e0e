"""Stage ``prepare``: base dataset + annotators' labels -> training set + fixed val episodes.

Reads ``params.yaml`` ``prepare`` (and ``train.fold``: the evaluation episodes test that fold's
novel classes). Writes ``data/train_set/`` (dataset folder, symlinked pairs, with
``prepare_report.json``), ``data/episodes/val.json`` (the evaluation episodes, by stem) and
``metrics/prepare.json``. Run by DVC as ``python -m mlops.prepare``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg.config import resolve
from dinoseg.data.folds import DEFAULT_MIN_AREA
from dinoseg.io import InputError
from mlops.merge import MergeReport, merge
from mlops.pipeline import EPISODES, METRICS, TRAIN_SET, section, stage_main

log = logging.getLogger("mlops.prepare")


@dataclass
class PrepareConfig:
    """``params.yaml`` section ``prepare``."""

    base: str = "../shared/data/camvid"
    labels: str = "data/labels"
    strict: bool = False  # true: any skipped label file fails the stage
    labels_val_fraction: float = 0.2  # labelled images held back for the gate (by stem hash)
    val_episodes: int = 300
    shots: int = 1
    seed: int = 0
    min_area: float = DEFAULT_MIN_AREA


def episode_list(root: Path, cfg: PrepareConfig, fold_index: int) -> dict[str, Any]:
    """The fixed evaluation episodes: ``cfg.val_episodes`` seeded episodes over the val split,
    classes = the fold's novel classes; each ``{class_id, query, supports}`` by stem."""
    from dinoseg.data import EpisodeSampler, FolderDataset
    from dinoseg.data.folds import dataset_fold

    ds = FolderDataset(root, "val")
    fold = dataset_fold(ds.class_names, ds.class_ids, fold_index)
    sampler = EpisodeSampler(ds, fold.novel, shots=cfg.shots, n_episodes=cfg.val_episodes,
                             seed=cfg.seed, min_area=cfg.min_area)
    episodes = []
    for i in range(len(sampler)):
        class_id, query, supports = sampler.episode_ids(i)
        episodes.append({"class_id": class_id, "query": query, "supports": supports})
    return {
        "split": "val", "shots": cfg.shots, "seed": cfg.seed, "min_area": cfg.min_area,
        "fold": {"benchmark": fold.benchmark, "index": fold.index, "novel": list(fold.novel)},
        "class_names": {str(c): ds.class_names[c] for c in fold.novel},
        "skipped_classes": {str(c): k for c, k in sampler.skipped.items()},
        "episodes": episodes,
    }


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def build_train_set(cfg: PrepareConfig, out: Path) -> MergeReport:
    """Merge into ``out`` through a temporary sibling, so a failure leaves nothing behind."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if not 0.0 <= cfg.labels_val_fraction < 1.0:
            raise InputError(f"prepare.labels_val_fraction must be in [0, 1), got "
                             f"{cfg.labels_val_fraction}")
        report = merge(Path(cfg.base), Path(cfg.labels), tmp, cfg.labels_val_fraction)
        if report.skipped and cfg.strict:
            listed = "; ".join(f"{s['file']}: {s['reason']}" for s in report.skipped[:5])
            raise InputError(f"{len(report.skipped)} label files cannot be used "
                             f"(prepare.strict is true): {listed}")
        _write_json(tmp / "prepare_report.json", dataclasses.asdict(report))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return report


def summary(report: MergeReport, n_episodes: int) -> dict[str, int]:
    """The numbers of a prepare run (``metrics/prepare.json``)."""
    return {"base_train_images": report.base_train, "label_images": report.labels_added,
            "held_back_label_images": report.labels_held_back,
            "train_images": report.base_train + report.labels_added,
            "val_images": report.base_val, "skipped_label_files": len(report.skipped),
            "remapped_label_masks": report.masks_remapped,
            "classes_added": len(report.classes_added), "val_episodes": n_episodes}


def run() -> None:
    """The stage (see the module docstring)."""
    from mlops.tracking import stage_run

    cfg = resolve(PrepareConfig, section("prepare"))
    fold = int(section("train").get("fold", 0))
    with stage_run("prepare", {**dataclasses.asdict(cfg), "fold": fold}) as run:
        report = build_train_set(cfg, TRAIN_SET)
        for s in report.skipped:
            log.warning("skipped %s: %s", s["file"], s["reason"])
        episodes = episode_list(TRAIN_SET, cfg, fold)
        shutil.rmtree(EPISODES, ignore_errors=True)
        _write_json(EPISODES / "val.json", episodes)
        numbers = summary(report, len(episodes["episodes"]))
        _write_json(METRICS / "prepare.json", numbers)
        run.log_metrics(numbers)
        run.log_artifacts(TRAIN_SET / "prepare_report.json")
        log.info("training set: %d base + %d labelled images (%d label files skipped, classes "
                 "added: %s); %d val images; %d evaluation episodes", report.base_train,
                 report.labels_added, len(report.skipped), report.classes_added or "none",
                 report.base_val, len(episodes["episodes"]))


if __name__ == "__main__":
    stage_main(run)
