"""Light supervised heads on frozen DINOv2 features (the aerial article's hybrid).

A head maps the frozen patch features of one or more backbone blocks to one logit per class
*name* (linear, small MLP or 3x3-conv), trained in seconds to minutes on cached features from
labelled images in the project's dataset folder format — full labels or an annotator's
one-class labels (other pixels ignore). Used for served classes with enough labels and for
aerial maps.

- :mod:`~dinoseg.heads.model`: :class:`HeadSpec`, :class:`SegHead`, warm start (:func:`grow_from`).
- :mod:`~dinoseg.heads.data`: labelled images -> features + per-patch class shares, the
  held-back split by content hash.
- :mod:`~dinoseg.heads.fit`, :mod:`~dinoseg.heads.train`: the fit, the whole run
  (:class:`HeadTrainConfig`, :func:`train_head`) and its checkpoint directory.
- :mod:`~dinoseg.heads.predict`: :class:`HeadPredictor` (``prob(images, class_name)``).
- :mod:`~dinoseg.heads.compare`: heads, few-shot predictors and their fusions on the same
  episodes.
"""

from dinoseg.heads.checkpoint import HEAD_ARCH, is_head_checkpoint, load_head, save_head
from dinoseg.heads.model import HEAD_KINDS, HeadSpec, SegHead, build_head, grow_from
from dinoseg.heads.predict import HeadPredictor
from dinoseg.heads.train import HeadTrainConfig, train_head

__all__ = [
    "HEAD_ARCH",
    "HEAD_KINDS",
    "HeadPredictor",
    "HeadSpec",
    "HeadTrainConfig",
    "SegHead",
    "build_head",
    "grow_from",
    "is_head_checkpoint",
    "load_head",
    "save_head",
    "train_head",
]
