"""The fixed evaluation episodes written by ``prepare`` (``data/episodes/*.json``), served with
the interface :func:`dinoseg.eval.protocol.evaluate` expects from an episode sampler.

A list names its dataset split (``split``) and may take the supports from another split of the
same dataset folder (``support_split``: the served episodes query held-back labelled images
with supports from the training images)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dinoseg.data import FolderDataset
from dinoseg.data.episodes import Episode
from dinoseg.io import InputError


class ListedEpisodes:
    """Episodes read from a list (``{class_id, query, supports}`` by stem) over ``dataset``.

    Attributes (as :class:`dinoseg.data.EpisodeSampler`): ``shots``, ``seed``, ``min_area``,
    ``class_order``, ``skipped``.
    """

    def __init__(self, dataset: FolderDataset, spec: dict[str, Any],
                 supports: FolderDataset | None = None):  # fmt: skip
        self.dataset = dataset
        self.supports = supports or dataset
        self.records = spec["episodes"]
        if not self.records:
            raise InputError("the episode list is empty; check prepare.val_episodes")
        missing = {r["query"] for r in self.records} - set(dataset.stems)
        missing |= {s for r in self.records for s in r["supports"]} - set(self.supports.stems)
        if missing:
            raise InputError(f"episode list names images the dataset lacks: "
                             f"{sorted(missing)[:5]}; rerun the prepare stage")
        self.shots = int(spec["shots"])
        self.seed = int(spec["seed"])
        self.min_area = float(spec["min_area"])
        self.class_order = tuple(dict.fromkeys(int(r["class_id"]) for r in self.records))
        self.skipped = {int(c): k for c, k in spec.get("skipped_classes", {}).items()}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Episode:
        r = self.records[i]
        class_id = int(r["class_id"])
        q_image, q_mask = self.dataset.load_binary(r["query"], class_id)
        loaded = [self.supports.load_binary(s, class_id) for s in r["supports"]]
        return Episode(query_image=q_image, query_mask=q_mask,
                       support_images=[img for img, _ in loaded],
                       support_masks=[m for _, m in loaded], class_id=class_id,
                       query_name=r["query"], support_names=list(r["supports"]))


def read_list(path: Path) -> dict[str, Any]:
    """The episode list file (see :func:`mlops.prepare.episode_list`)."""
    if not path.is_file():
        raise InputError(f"{path} not found; run the prepare stage (dvc repro prepare)")
    return dict(json.loads(path.read_text()))


def list_digest(path: Path) -> str:
    """Identity of an episode list: models evaluated on lists with the same digest are
    comparable number for number."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def open_list(root: Path, path: Path) -> tuple[ListedEpisodes, dict[str, Any]]:
    """The episodes of list ``path`` over the dataset folder ``root``, and the list."""
    spec = read_list(path)
    dataset = FolderDataset(root, spec["split"])
    support = spec.get("support_split")
    supports = FolderDataset(root, support) if support and support != spec["split"] else None
    return ListedEpisodes(dataset, spec, supports), spec
