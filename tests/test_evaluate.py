"""``dinoseg eval``, :func:`dinoseg.eval.protocol.evaluate` and the feature cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinoseg.backbone import DinoBackbone
from dinoseg.checkpoint import CheckpointConfig, save_checkpoint
from dinoseg.cli import main
from dinoseg.data import EpisodeSampler, FolderDataset
from dinoseg.eval.protocol import EvalResult, episode_iou, evaluate, parse_classes
from dinoseg.feature_cache import FeatureCache
from dinoseg.io import InputError
from dinoseg.models import build_segmenter
from dinoseg.models.prototype import PrototypeBaseline
from dinoseg.predictor import FewShotPredictor

SHARED_DATA = (Path(__file__).parents[2] / "shared" / "data").resolve()
CLASSES = ["red", "green", "blue"]
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]
SIZE = 56


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("DINOSEG_CACHE", str(path))
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_dino() -> torch.nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=56,
    )
    return Dinov2Model(config).eval()


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes, 8 images 64x48: noise with one or two coloured rectangles, 255 = ignore."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "classes.json").write_text(json.dumps({"classes": CLASSES, "ignore_index": 255}))
    for d in ("images", "masks"):
        (root / "val" / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        image = rng.integers(0, 90, size=(48, 64, 3)).astype(np.uint8)
        labels = np.full((48, 64), 255, dtype=np.uint8)
        labels[4:44, 4:60] = 3  # "nothing" label area -> background after binarisation
        for c in (i % 3, (i + 1) % 3)[: 1 + i % 2]:
            top, left = rng.integers(4, 24), rng.integers(4, 36)
            image[top : top + 20, left : left + 24] = COLOURS[c]
            labels[top : top + 20, left : left + 24] = c
        labels[labels == 3] = 255 if i % 4 == 0 else 0
        labels[0:4] = 255
        Image.fromarray(image).save(root / "val" / "images" / f"im{i}.png")
        Image.fromarray(labels).save(root / "val" / "masks" / f"im{i}.png")
    return root


def predictors(backbone: DinoBackbone) -> dict[str, FewShotPredictor]:
    torch.manual_seed(0)
    fsdino = build_segmenter("fsdino-tiny")
    return {
        "prototype": FewShotPredictor(PrototypeBaseline(), backbone, image_size=SIZE),
        "fsdino-tiny": FewShotPredictor(fsdino, backbone, image_size=SIZE, model_id="tiny"),
    }


def run_eval(root: Path, backbone: DinoBackbone, cache: FeatureCache) -> EvalResult:
    sampler = EpisodeSampler(FolderDataset(root, "val"), shots=2, n_episodes=6, seed=3)
    return evaluate(predictors(backbone), sampler, cache=cache, progress=False, n_examples=2)


def _metrics(result: EvalResult) -> dict[str, object]:
    return {n: (m["metrics"], m["episodes"]) for n, m in result.report["models"].items()}


def test_second_model_and_rerun_pay_no_encoder(
    dataset_root: Path, tmp_path: Path, one_thread: None
) -> None:
    backbone = DinoBackbone(tiny_dino(), (1, 2), spec="tiny")
    calls: list[int] = []
    backbone.register_forward_hook(lambda _m, args, _o: calls.append(len(args[0])))  # images

    alone = evaluate(
        {"prototype": predictors(backbone)["prototype"]},
        EpisodeSampler(FolderDataset(dataset_root, "val"), shots=2, n_episodes=6, seed=3),
        cache=FeatureCache(), progress=False,
    )  # fmt: skip
    first_model_calls = sum(calls)
    assert first_model_calls == alone.report["feature_cache"]["misses"] > 0

    calls.clear()
    cold = run_eval(dataset_root, backbone, FeatureCache(disk_dir=tmp_path / "feats"))
    assert sum(calls) == first_model_calls  # the second model triggered no encoder call
    calls.clear()
    warm = run_eval(dataset_root, backbone, FeatureCache(disk_dir=tmp_path / "feats"))
    assert calls == [] and warm.report["feature_cache"]["disk_hits"] > 0
    memory_only = run_eval(dataset_root, backbone, FeatureCache(max_bytes=0))

    # same seed -> same numbers, whatever the cache held
    assert _metrics(cold) == _metrics(warm) == _metrics(memory_only)
    assert _metrics(alone)["prototype"] == _metrics(cold)["prototype"]
    episodes = [
        [(e["query"], e["class_id"]) for e in m["episodes"]] for m in cold.report["models"].values()
    ]
    assert episodes[0] == episodes[1] and len(episodes[0]) == 6


def test_cli_writes_report_and_plots(
    dataset_root: Path, tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    backbone_dir = tmp_path / "tiny-dino"
    tiny_dino().save_pretrained(backbone_dir)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_segmenter("fsdino-tiny"), CheckpointConfig(
        arch="fsdino-tiny", backbone=str(backbone_dir), layers=[1, 2], image_size=SIZE,
        version="tiny-v1"))  # fmt: skip
    out = tmp_path / "out" / "report.json"
    argv = ["eval", "--data", str(dataset_root), "--split", "val", "--classes", "red,1",
            "--shots", "1", "--episodes", "5", "--seed", "0", "--model", "prototype",
            "--model", str(ckpt), "--backbone", str(backbone_dir), "--image-size", str(SIZE),
            "--out", str(out), "--no-progress", "--examples", "2"]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[-3].startswith("mIoU") and table[-2].startswith("FB-IoU")

    report = json.loads(out.read_text())
    assert report["settings"]["classes"] == [0, 1] and report["settings"]["shots"] == 1
    assert report["settings"]["class_names"] == {"0": "red", "1": "green"}
    assert report["settings"]["image_size"] == SIZE
    assert report["settings"]["backbone"] == {"spec": str(backbone_dir), "layers": [1, 2]}
    assert list(report["models"]) == ["prototype", str(ckpt)]
    assert report["models"][str(ckpt)]["model_id"] == "tiny-v1"
    for m in report["models"].values():
        assert m["backbone"] == {"spec": str(backbone_dir), "layers": [1, 2]}
        assert set(m["metrics"]["per_class"]) == {"0", "1"}
        assert m["metrics"]["episodes"] == 5 and len(m["episodes"]) == 5
        assert all(0 <= e["iou"] <= 1 and 0 <= e["confidence"] <= 1 for e in m["episodes"])
        assert m["timing"]["encoder_seconds_per_episode"] >= 0
    assert report["feature_cache"]["memory_hits"] > 0
    assert len(report["plots"]) == 4
    for name in report["plots"]:
        assert Image.open(out.parent / name).size[0] > 100


def test_feature_cache_lru_and_keys() -> None:
    feats = [torch.ones(1, 4, 2, 2)]  # 64 bytes
    cache = FeatureCache(max_bytes=150)
    for k in "abc":
        cache.put(k, feats)
    assert cache.entries == 2 and cache.get("a") is None and cache.get("c") is not None
    assert cache.stats.evictions == 1 and cache.memory_bytes == 128
    x = torch.zeros(3, 28, 28)
    assert FeatureCache.key(x, "bb|layers=1") != FeatureCache.key(x, "bb|layers=2")
    assert FeatureCache.key(x, "bb") != FeatureCache.key(torch.zeros(3, 28, 42), "bb")
    assert FeatureCache.key(x, "bb") == FeatureCache.key(x.clone(), "bb")


def test_classes_by_name_or_id() -> None:
    generic = dict(enumerate(["land", "water", "road"]))
    assert parse_classes("Water, 0", generic) == [0, 1]
    with pytest.raises(InputError, match="unknown class 'sea'"):
        parse_classes("sea", generic)


def test_episode_iou_ignores_void() -> None:
    target = np.array([[1, 1, 0, 255]], dtype=np.uint8)
    assert episode_iou(np.array([[1, 0, 1, 1]], bool), target) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classes", "red,purple"], "unknown class 'purple'"),
        (["--fold", "7", "--n-folds", "3"], "fold 7 does not exist"),
        (["--model", "/no/such/ckpt"], "no such checkpoint directory"),
    ],
)
def test_bad_arguments_exit_2(
    dataset_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:  # fmt: skip
    argv = ["eval", "--data", str(dataset_root), "--out", str(tmp_path / "r.json"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_data_dir_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r.json")]) == 2
    assert "no such dataset folder" in capsys.readouterr().err


def _shared(name: str) -> Path:
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.fail(f"real data missing: {root} (the repo expects ../shared/data beside it)")
    return root


def test_camvid_prototype_real_weights(tmp_path: Path) -> None:
    _shared("camvid")
    out = tmp_path / "camvid.json"
    argv = ["eval", "--data", str(SHARED_DATA / "camvid"), "--split", "val", "--fold", "0",
            "--shots", "1", "--episodes", "12", "--seed", "0", "--model", "prototype",
            "--out", str(out), "--no-progress", "--examples", "1"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["fold"] == {"benchmark": "camvid-3i", "index": 0, "n_folds": 3,
                                          "novel": [0, 3, 6, 9]}  # fmt: skip
    metrics = report["models"]["prototype"]["metrics"]
    assert set(metrics["per_class"]) == {"0", "3", "6", "9"}
    assert 15.0 < metrics["miou"] < 90.0 and 40.0 < metrics["fb_iou"] < 95.0
    assert report["models"]["prototype"]["backbone"]["spec"] == "packaged:dinov2-s"


def test_coco_layout_uses_coco20i_folds(tmp_path: Path) -> None:
    out = tmp_path / "coco.json"
    argv = ["eval", "--data", str(_shared("coco-mini")), "--split", "val2017", "--fold", "0",
            "--shots", "1", "--episodes", "2", "--model", "prototype", "--out", str(out),
            "--no-progress", "--examples", "0"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["fold"]["benchmark"] == "coco-20i"
    assert set(report["settings"]["fold"]["novel"]) == set(range(0, 80, 4))
