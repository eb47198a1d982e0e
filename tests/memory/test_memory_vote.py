"""The nearest-neighbour vote and the memory as a mode of the predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dinoseg.backbone import DinoBackbone
from dinoseg.io import InputError
from dinoseg.memory import MemoryEncoder, MemoryMode, SupportMemory, image_hash
from dinoseg.models import build_segmenter
from dinoseg.models.knn import KnnVote, knn_vote, nearest_keys
from dinoseg.models.prototype import PrototypeBaseline
from dinoseg.predictor import FewShotPredictor, load_predictor
from tests.memory.scenes import CYAN, NAMES, YELLOW, scene, thing_scenes


def iou(pred: np.ndarray, labels: np.ndarray) -> float:
    gt = labels == 1
    return float((pred & gt).sum() / max((pred | gt).sum(), 1))


def test_vote_on_separable_features() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(8), torch.randn(8)
    keys = torch.cat([a + 0.1 * torch.randn(20, 8), b + 0.1 * torch.randn(30, 8)])
    keys = torch.nn.functional.normalize(keys, dim=1)
    values = torch.cat([torch.ones(20), torch.zeros(30)])
    query = torch.stack([a, b, a + 0.05 * torch.randn(8)])
    prob = knn_vote(query, keys, values, k=10, temperature=0.05)
    assert prob[0] > 0.99 and prob[1] < 0.01 and prob[2] > 0.99
    # 1 foreground key among 50: plain vote of 10 says background; a balanced one does not
    lone = torch.cat([torch.ones(1), torch.zeros(49)])
    near = torch.nn.functional.normalize(torch.cat([a[None], a + 0.3 * torch.randn(49, 8)]), dim=1)
    plain = knn_vote(a[None], near, lone, k=10, temperature=1.0)
    balanced = knn_vote(a[None], near, lone, k=10, temperature=1.0, balance=1.0)
    assert plain < 0.5 < balanced


def test_chunked_nearest_keys_match_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    import dinoseg.models.knn as knn

    q = torch.nn.functional.normalize(torch.randn(7, 5), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(40, 5), dim=1)
    dense = (q @ keys.T).topk(6, dim=1)
    monkeypatch.setattr(knn, "KEY_CHUNK", 9)
    sims, idx = nearest_keys(q, keys, 6)
    torch.testing.assert_close(sims, dense.values)
    assert torch.equal(idx, dense.indices)
    assert nearest_keys(q, keys[:3], 6)[0].shape == (7, 3)


def test_knn_model_segments_a_synthetic_scene(backbone: DinoBackbone) -> None:
    support, s_lab = scene(0, (14, 14, 42, 56), YELLOW)
    query, q_lab = scene(1, (42, 28, 70, 70), YELLOW)
    p = FewShotPredictor(build_segmenter("knn"), backbone, image_size=84)
    p.set_support([support], [s_lab == 1])
    assert iou(p.predict([query])[0].mask, q_lab) > 0.8


@pytest.fixture
def cyan_memory(tmp_path: Path, encoder: MemoryEncoder) -> SupportMemory:
    """Labelled scenes of "thing" in cyan (the support shows it in yellow)."""
    memory = SupportMemory.create(tmp_path / "mem", encoder)
    with memory.writing():
        for i, (img, lab) in enumerate(thing_scenes(6, CYAN)):
            memory.add(img, lab, NAMES, f"s{i}", save=False)
    return memory


def test_labels_in_the_memory_help_the_next_request(
    backbone: DinoBackbone, cyan_memory: SupportMemory
) -> None:
    support, s_lab = scene(0, (14, 14, 42, 56), YELLOW)
    query, q_lab = scene(1, (42, 28, 70, 70), CYAN)
    p = FewShotPredictor(KnnVote(), backbone, image_size=84)
    p.set_support([support], [s_lab == 1], class_name="thing")
    alone = p.predict([query])[0]
    assert iou(alone.mask, q_lab) < 0.2 and alone.retrieved == ()  # no memory attached
    p.attach_memory(cyan_memory, MemoryMode(images=3, weight=1.0))  # the vote alone
    p.set_support([support], [s_lab == 1], class_name="Thing")
    helped = p.predict([query])[0]
    assert iou(helped.mask, q_lab) > 0.6 and len(helped.retrieved) == 3
    p.set_support([support], [s_lab == 1])  # no class named: behaviour unchanged
    np.testing.assert_array_equal(p.predict([query])[0].prob, alone.prob)
    p.set_support([support], [s_lab == 1], class_name="car")  # nothing of it in the memory
    np.testing.assert_array_equal(p.predict([query])[0].prob, alone.prob)


def test_the_query_and_supports_are_never_retrieved(
    backbone: DinoBackbone, cyan_memory: SupportMemory
) -> None:
    scenes = thing_scenes(6, CYAN)
    p = FewShotPredictor(PrototypeBaseline(), backbone, image_size=84)
    p.attach_memory(cyan_memory, MemoryMode(images=None, weight=0.5))
    p.set_support([scenes[0][0]], [scenes[0][1] == 1], class_name="thing")
    preds = p.predict([img for img, _ in scenes[1:]])
    everything = {image_hash(img) for img, _ in scenes}
    for (img, _), pred in zip(scenes[1:], preds, strict=True):
        assert image_hash(img) not in pred.retrieved
        assert set(pred.retrieved) == everything - {image_hash(img), image_hash(scenes[0][0])}


def test_memory_of_another_backbone_is_refused(tmp_path: Path, cyan_memory: SupportMemory) -> None:
    from tests.conftest import tiny_dinov2

    other = DinoBackbone(tiny_dinov2(seed=3), (1, 2), spec="tiny")
    with pytest.raises(InputError, match="rebuild the memory"):
        FewShotPredictor(PrototypeBaseline(), other).attach_memory(cyan_memory)
    one_block = DinoBackbone(cyan_memory.encoder.backbone.model, (1,), spec="tiny")  # type: ignore[union-attr]
    with pytest.raises(InputError, match="block 2 not among"):
        FewShotPredictor(PrototypeBaseline(), one_block).attach_memory(cyan_memory)


def test_load_predictor_knn_and_memory_dir(
    cyan_memory: SupportMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dinoseg.predictor as predictor_module

    backbone = cyan_memory.encoder.backbone  # type: ignore[union-attr]
    monkeypatch.setattr(predictor_module, "load_backbone", lambda *a, **kw: backbone)
    p = load_predictor("knn", memory=cyan_memory.root, memory_mode=MemoryMode(images=2))
    assert isinstance(p.model, KnnVote) and p.model_id == "knn"
    assert p.memory is not None and p.memory.version == cyan_memory.version
    assert p.memory_mode.images == 2 and not p.uses_memory
    with pytest.raises(ValueError, match="weight"):
        MemoryMode(weight=1.5)


def test_a_label_added_by_another_process_helps_the_next_request(
    tmp_path: Path, backbone: DinoBackbone, encoder: MemoryEncoder
) -> None:
    from dinoseg.memory import load_encoder

    served = SupportMemory.create(tmp_path / "mem", encoder)  # the worker's handle
    support, s_lab = scene(0, (14, 14, 42, 56), YELLOW)
    query, q_lab = scene(1, (42, 28, 70, 70), CYAN)
    p = FewShotPredictor(KnnVote(), backbone, image_size=84)
    p.attach_memory(served, MemoryMode(images=3, weight=1.0))
    p.set_support([support], [s_lab == 1], class_name="thing")
    assert p.predict([query])[0].retrieved == ()  # nothing labelled yet
    writer = SupportMemory.open(tmp_path / "mem", encoder=load_encoder(served.settings, backbone))
    img, lab = thing_scenes(1, CYAN)[0]
    writer.add(img, lab, NAMES, "label 1")  # the sync, in another process
    after = p.predict([query])[0]
    assert after.retrieved == (image_hash(img),) and iou(after.mask, q_lab) > 0.6
    from tests.conftest import tiny_dinov2

    other = DinoBackbone(tiny_dinov2(seed=2), (1, 2), spec="tiny")
    with pytest.raises(InputError, match="not the weights"):
        load_encoder(served.settings, other)
