"""The episode lists of the promotion gate: what users get, and the generality guard.

- :func:`served_list`: every held-back labelled image (``labels_val`` of the training set)
  queried for each class it shows, with ``shots`` supports drawn (seeded) from the training
  images of that class — a stakeholder's request for a served class; without held-back labels
  the base's val images stand in (the base classes are the served classes then).
- :func:`guard_list`: seeded few-shot episodes over every class of a dataset the served model
  never trains on (a model that gains on its classes but forgets how to segment new things is
  refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.data import EpisodeSampler, FolderDataset
from dinoseg.io import InputError
from mlops.merge import LABELS_VAL


def _present(ds: FolderDataset, stem: str, min_area: float) -> list[int]:
    return [c for c in ds.present_classes(stem, min_area) if c in ds.class_ids]


def served_list(root: Path, shots: int, seed: int, min_area: float, limit: int
                ) -> dict[str, Any]:  # fmt: skip
    """The served episodes over the training set ``root`` (see the module docstring)."""
    split = LABELS_VAL if (root / LABELS_VAL / "images").is_dir() else "val"
    queries, train = FolderDataset(root, split), FolderDataset(root, "train")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[str]] = {}
    episodes: list[dict[str, Any]] = []
    skipped: dict[int, int] = {}
    for stem in queries.stems:
        for c in _present(queries, stem, min_area):
            pool = by_class.setdefault(c, train.images_with_class(c, min_area))
            if len(pool) < shots:
                skipped[c] = skipped.get(c, 0) + 1
                continue
            supports = [pool[int(i)] for i in rng.choice(len(pool), shots, replace=False)]
            episodes.append({"class_id": c, "query": stem, "supports": supports})
    if len(episodes) > limit:
        keep = sorted(rng.choice(len(episodes), limit, replace=False).tolist())
        episodes = [episodes[i] for i in keep]
    names = queries.class_names
    return {
        "split": split, "support_split": "train", "shots": shots, "seed": seed,
        "min_area": min_area, "class_names": {str(c): names[c] for c in sorted(by_class)},
        "skipped_classes": {str(c): k for c, k in skipped.items()}, "episodes": episodes,
    }  # fmt: skip


def guard_list(source: str, shots: int, seed: int, min_area: float, n: int) -> dict[str, Any]:
    """Seeded few-shot episodes over every class of ``source`` (``DIR[:SPLIT]``)."""
    root, sep, split = source.rpartition(":")
    if not sep or "/" in split or not root:
        root, split = source, "train"
    if not Path(root).is_dir():
        raise InputError(f"prepare.guard: {root} is not a dataset folder")
    ds = FolderDataset(root, split)
    sampler = EpisodeSampler(ds, ds.class_ids, shots=shots, n_episodes=n, seed=seed,
                             min_area=min_area)  # fmt: skip
    episodes = []
    for i in range(len(sampler)):
        class_id, query, supports = sampler.episode_ids(i)
        episodes.append({"class_id": class_id, "query": query, "supports": supports})
    return {
        "root": str(Path(root).resolve()), "split": split, "shots": shots, "seed": seed,
        "min_area": min_area, "class_names": {str(c): ds.class_names[c] for c in ds.class_ids},
        "skipped_classes": {str(c): k for c, k in sampler.skipped.items()}, "episodes": episodes,
    }  # fmt: skip
