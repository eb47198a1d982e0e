"""Stage ``prepare``: base dataset + annotators' labels -> training set + fixed episode lists.

Reads ``params.yaml`` ``prepare`` (and ``train.fold``: the benchmark episodes test that fold's
novel classes; fold -1, the served model trained on every class, tests every class). Writes
``data/train_set/`` (dataset folder, symlinked pairs, with ``prepare_report.json``; held-back
labels in ``labels_val``), ``data/episodes/``:

- ``val.json``     the benchmark episodes over the base's val split (by stem);
- ``served.json``  what users get: each held-back labelled image queried for each class it
                   shows, 1-shot supports from the training images (no labels held back
                   yet: the base's val images), the promotion gate's first figure;
- ``guard.json``   few-shot episodes on ``prepare.guard``, a dataset the served model never
                   trains on (the gate's generality guard; absent when no guard is set);

and ``metrics/prepare.json``. Run by DVC as ``python -m mlops.prepare``.
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
from mlops.served_episodes import guard_list, served_list

log = logging.getLogger("mlops.prepare")


@dataclass
class PrepareConfig:
    """``params.yaml`` section ``prepare``."""

    base: str = "../shared/data/camvid"
    labels: str = "data/labels"
    strict: bool = False  # true: any skipped label file fails the stage
    labels_val_fraction: float = 0.2  # labelled images held back for the gate (by stem hash)
    served_episodes: int = 300  # at most this many served episodes (seeded choice)
    guard: str = ""  # DIR[:SPLIT] of the generality guard ("" = none)
    guard_episodes: int = 100
    val_episodes: int = 300
    shots: int = 1
    seed: int = 0
    min_area: float = DEFAULT_MIN_AREA


def episode_list(root: Path, cfg: PrepareConfig, fold_index: int) -> dict[str, Any]:
    """The fixed evaluation episodes: ``cfg.val_episodes`` seeded episodes over the val split,
    classes = the fold's novel classes; each ``{class_id, query, supports}`` by stem."""
    from dinoseg.data import EpisodeSampler, FolderDataset
    from dinoseg.data.folds import Fold, dataset_fold

    ds = FolderDataset(root, "val")
    fold = (Fold("all", -1, 0, ds.class_ids, ds.class_ids) if fold_index < 0
            else dataset_fold(ds.class_names, ds.class_ids, fold_index))  # fmt: skip
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
        served = served_list(TRAIN_SET, cfg.shots, cfg.seed, cfg.min_area, cfg.served_episodes)
        _write_json(EPISODES / "served.json", served)
        if cfg.guard:
            guard = guard_list(cfg.guard, cfg.shots, cfg.seed, cfg.min_area, cfg.guard_episodes)
            _write_json(EPISODES / "guard.json", guard)
        numbers = {**summary(report, len(episodes["episodes"])),
                   "served_episodes": len(served["episodes"])}
        _write_json(METRICS / "prepare.json", numbers)
        run.log_metrics(numbers)
        run.log_artifacts(TRAIN_SET / "prepare_report.json")
        log.info("training set: %d base + %d labelled images (%d label files skipped, classes "
                 "added: %s); %d val images; %d evaluation episodes", report.base_train,
                 report.labels_added, len(report.skipped), report.classes_added or "none",
                 report.base_val, len(episodes["episodes"]))


if __name__ == "__main__":
    stage_main(run)
