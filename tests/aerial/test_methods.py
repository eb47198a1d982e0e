"""The four aerial methods on tiny random models, behind one interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aerial_helpers import NAMES

from dinoseg.aerial.ade20k import ADE20K_CLASSES, ADE20K_TO_CITY, mapping_matrix
from dinoseg.aerial.categories import UNKNOWN
from dinoseg.aerial.features import Supports, TileEncoder
from dinoseg.aerial.methods.base import TileSettings, argmax_with_unknown
from dinoseg.aerial.methods.fewshot import FewShotMethod
from dinoseg.aerial.methods.kmeans import KMeansMethod
from dinoseg.aerial.methods.sam_match import SamMatchMethod
from dinoseg.aerial.methods.segformer import SegformerMethod, load_segformer
from dinoseg.aerial.sam import mask_generator
from dinoseg.io import InputError
from dinoseg.models.prototype import PrototypeBaseline
from dinoseg.teachers import build_teacher

WHOLE = TileSettings(tile=128, overlap=0, batch=1)
SMALL = TileSettings(tile=56, overlap=14, batch=2)


def test_fewshot_one_tile_equals_untiled_scores(tiny_backbone, supports, photo):
    image, _ = photo
    method = FewShotMethod(PrototypeBaseline(), TileEncoder(tiny_backbone), supports,
                           unknown_threshold=0.0, tiles=WHOLE)
    labels = method.segment(image)
    direct = method.decide(method.tile_scores(image[None])[0])
    np.testing.assert_array_equal(labels, direct)
    assert labels.shape == image.shape[:2] and labels.max() < len(NAMES)


def test_fewshot_tiled_labels_and_absent_classes(tiny_backbone, supports, photo):
    image, _ = photo
    no_road = Supports(
        supports.images, [np.where(lab == 4, 255, lab) for lab in supports.labels], list(NAMES)
    )
    method = FewShotMethod(PrototypeBaseline(), TileEncoder(tiny_backbone), no_road,
                           unknown_threshold=0.0, tiles=SMALL)
    labels = method.segment(image)
    assert labels.shape == (84, 112)
    assert 4 not in np.unique(labels)  # a class no support shows is never predicted


def test_unknown_threshold():
    probs = np.array([[[0.9, 0.2]], [[0.05, 0.3]]], np.float32)  # (S=2, 1, 2)
    np.testing.assert_array_equal(argmax_with_unknown(probs, 0.5), [[0, UNKNOWN]])
    np.testing.assert_array_equal(argmax_with_unknown(probs, 0.0), [[0, 1]])


def test_fewshot_rejects_bad_supports(tiny_backbone, supports):
    enc = TileEncoder(tiny_backbone)
    with pytest.raises(InputError, match="needs support"):
        FewShotMethod(PrototypeBaseline(), enc, Supports([], [], list(NAMES)))
    with pytest.raises(InputError, match="not class indices"):
        Supports(supports.images, [supports.labels[0] + 7, supports.labels[1]], list(NAMES))
    with pytest.raises(InputError, match="mask is"):
        Supports(supports.images[:1], [supports.labels[0][:10]], list(NAMES))


def test_kmeans_without_supports_gives_clusters(tiny_backbone, photo):
    image, _ = photo
    method = KMeansMethod(TileEncoder(tiny_backbone), k=3, tiles=SMALL)
    labels = method.segment(image)
    assert method.class_names == ["cluster 0", "cluster 1", "cluster 2"]
    assert labels.shape == (84, 112) and set(np.unique(labels)) <= {0, 1, 2}


def test_kmeans_names_clusters_by_nearest_prototype(tiny_backbone, supports, photo):
    image, _ = photo
    method = KMeansMethod(TileEncoder(tiny_backbone), k=4, supports=supports, tiles=SMALL)
    labels = method.segment(image)
    assert method.class_names == NAMES
    assert set(np.unique(labels)) <= set(method.cluster_to_label.tolist())
    with pytest.raises(InputError, match="k >= 2"):
        KMeansMethod(TileEncoder(tiny_backbone), k=1)


class _FixedGenerator:
    """Stands in for SAM's generator: one known segment per tile."""

    def generate(self, image: np.ndarray) -> list[dict]:
        mask = np.zeros(image.shape[:2], bool)
        mask[10:40, 20:60] = True
        return [{"segmentation": mask, "area": int(mask.sum())}]


def test_sam_match_labels_each_segment_as_one_class(tiny_backbone, supports, photo):
    image, _ = photo
    method = SamMatchMethod(TileEncoder(tiny_backbone), _FixedGenerator(), supports, tiles=WHOLE)
    labels = method.segment(image)
    assert len(np.unique(labels[10:40, 20:60])) == 1
    assert method.masks_per_tile == [1]


@pytest.mark.parametrize("prompts", ["points", "boxes"])
def test_sam_match_runs_on_a_tiny_random_sam(tiny_backbone, supports, photo, prompts):
    image, _ = photo
    sam = build_teacher("tiny-random", embed_dim=32, image_size=64)
    generator = mask_generator(sam, prompts=prompts, points_per_side=3, pred_iou_thresh=0.0,
                               stability_score_thresh=0.0)
    method = SamMatchMethod(TileEncoder(tiny_backbone), generator, supports, tiles=WHOLE)
    labels = method.segment(image)
    assert labels.shape == (84, 112) and labels.max() < len(NAMES)
    assert len(method.masks_per_tile) == 1


def test_ade20k_mapping_is_complete():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert sorted(ADE20K_TO_CITY) == list(range(150))
    assert {v for v in ADE20K_TO_CITY.values()} == {None, *NAMES}
    for name, cat in [("building", "building"), ("road", "road"), ("sea", "water"),
                      ("tree", "vegetation"), ("sand", "land"), ("sky", None), ("bed", None)]:
        assert ADE20K_TO_CITY[ADE20K_CLASSES.index(name)] == cat
    m = mapping_matrix(NAMES)
    assert m.shape == (150, 6)
    np.testing.assert_array_equal(m.sum(1), 1.0)
    assert mapping_matrix(["road"])[ADE20K_CLASSES.index("tree"), 1] == 1  # -> other


def _tiny_segformer(num_labels: int = 150):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    cfg = SegformerConfig(
        num_labels=num_labels, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16, sr_ratios=[8, 4, 2, 1],
    )
    return SegformerForSemanticSegmentation(cfg).eval()


def test_segformer_on_a_tiny_random_config(photo, tmp_path):
    image, _ = photo
    model = _tiny_segformer()
    method = SegformerMethod(model, list(NAMES), tiles=TileSettings(64, 16, 2))
    scores = method.tile_scores(image[None, :64, :64])
    assert scores.shape == (1, 6, 64, 64)
    np.testing.assert_allclose(np.exp(scores).sum(1), 1.0, atol=1e-3)
    labels = method.segment(image)
    assert labels.shape == (84, 112)
    assert set(np.unique(labels)) <= {*range(5), UNKNOWN}
    model.save_pretrained(tmp_path / "segformer")
    assert load_segformer(str(tmp_path / "segformer")).config.num_labels == 150


def test_segformer_errors(tmp_path):
    with pytest.raises(InputError, match="150 classes"):
        SegformerMethod(_tiny_segformer(num_labels=19), list(NAMES))
    with pytest.raises(InputError, match="not found"):
        load_segformer(str(tmp_path / "missing"))


def test_sam_model_choice_errors(tmp_path):
    from dinoseg.aerial.sam import load_sam

    with pytest.raises(InputError, match="cannot tell the SAM model"):
        load_sam("auto", tmp_path / "weights.pth")
    with pytest.raises(InputError, match="not found"):
        load_sam("auto", tmp_path / "sam_vit_b_01ec64.pth")
    with pytest.raises(InputError, match="unknown teacher"):
        load_sam("sam_vit_x")
    with pytest.raises(InputError, match="use auto, points or boxes"):
        mask_generator(build_teacher("tiny-random", embed_dim=32, image_size=64), prompts="dots")


def test_fewshot_runs_a_trained_segmenter_architecture(tiny_backbone, supports, photo):
    """The multi-layer FS-DINO segmenter (what checkpoints hold) behind the same method."""
    from dinoseg.models import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter("fsdino-tiny").eval()
    method = FewShotMethod(model, TileEncoder(tiny_backbone), supports, tiles=SMALL)
    scores = method.tile_scores(photo[0][None, :56, :56])
    assert scores.shape == (1, len(NAMES), 56, 56) and np.isfinite(scores).all()
    labels = method.segment(photo[0])
    assert labels.shape == (84, 112)
