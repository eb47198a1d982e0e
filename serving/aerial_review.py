"""``aerial/params.yaml`` section ``aerial_review``: the aerial review loop's settings, read by
the workers (which tiles go where, when a retrain is due: :mod:`workers.labelstudio.aerial`)
and by the aerial pipeline's training stage (:mod:`mlops.aerial_train`: where the labels are,
the head kind they retrain). Its own module so that the stage depends on these settings only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dinoseg.config import load_params, resolve

AERIAL_PARAMS_FILE = Path("aerial/params.yaml")


@dataclass
class AerialReviewConfig:
    """``aerial/params.yaml: aerial_review``.

    Attributes:
        labels_dir: where synced tile labels land (the Dubai folder layout); the last, winning
            training source of ``dvc repro aerial/dvc.yaml`` once it holds a ``classes.json``.
        project_title: the Label Studio project of the aerial review tiles.
        retrain_kind: the head kind trained once ``labels_dir`` holds tiles ("" = the
            ``aerial_train`` kind; docs/aerial.md measured ``mlp``).
        retrain_after: new or edited tile labels that queue ``dvc repro aerial/dvc.yaml``
            (0 = never by itself).
    """

    labels_dir: str = "data/aerial_labels"
    project_title: str = "dinoseg aerial review"
    retrain_kind: str = "mlp"
    retrain_after: int = 3

    @classmethod
    def load(cls, path: Path = AERIAL_PARAMS_FILE) -> AerialReviewConfig:
        """Resolved from ``path`` (defaults when there is no params file)."""
        section = load_params(path, "aerial_review") if path.is_file() else {}
        return resolve(cls, section)
