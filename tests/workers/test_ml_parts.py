"""The ML backend's pieces without Label Studio: labelling config, request parsing, examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoseg.interactive import Box, Click
from workers.labelstudio.client import config_labels
from workers.labelstudio.convert import label_config
from workers.labelstudio.interactive import BackendError, parse_context, parse_schema
from workers.labelstudio.ml_backend import _reason
from workers.labelstudio.preannotate import ExamplePreannotator, UnknownClass


def test_label_config_needs_only_the_image_in_task_data() -> None:
    config = label_config(["road", "sign symbol"])
    # Label Studio requires a task-data key for every *named* tag whose value is $key
    named = re.findall(r'<(\w+) name="[^"]*" value="\$(\w+)"', config)
    assert named == [("Image", "image")]
    for key in ("$class_name", "$context", "$support_image"):
        assert key in config
    assert config_labels(config) == ["road", "sign symbol"]
    schema = parse_schema(config)
    assert (schema.brush, schema.image, schema.image_key) == ("mask", "image", "image")
    assert schema.labels == ("road", "sign symbol", "object")
    for tool in ("KeyPointLabels", "RectangleLabels"):  # the smart tools carry the same labels
        block = re.search(rf"<{tool} [^>]*smart=\"true\">(.*?)</{tool}>", config).group(1)
        assert re.findall(r'value="([^"]*)"', block) == list(schema.labels)


def test_schema_errors() -> None:
    image_only = "<View><Image name='i' value='$i'/></View>"
    for bad, message in ((None, "no label_config"), ("<View", "not XML"),
                         (image_only, "no BrushLabels")):  # fmt: skip
        with pytest.raises(BackendError, match=message) as e:
            parse_schema(bad)
        assert e.value.status == 400


def test_context_in_percent_becomes_pixels() -> None:
    point = {"type": "keypointlabels", "value": {"x": 50.0, "y": 25.0, "keypointlabels": ["car"]}}
    negative = {**point, "is_positive": False, "value": {**point["value"], "x": 10.0}}
    corner = {"x": 10.0, "y": 20.0, "width": 50.0, "height": 40.0}
    rect = {"type": "rectanglelabels", "value": {**corner, "rectanglelabels": ["car"]}}
    prompts = parse_context({"result": [point, negative]}, (200, 400))
    assert prompts.clicks == [Click(200.0, 50.0, True), Click(40.0, 50.0, False)]
    assert prompts.label == "car" and prompts.box is None
    other = {**rect, "value": {**rect["value"], "x": 0.0}}
    assert parse_context({"result": [other, rect]}, (200, 400)).box == Box(40.0, 40.0, 240.0, 120.0)
    for bad in ({"result": []}, {"result": [{"type": "choices", "value": {}}]},
                {"result": [{**point, "value": {"x": "3", "y": 1}}]}):  # fmt: skip
        with pytest.raises(BackendError):
            parse_context(bad, (200, 400))


def test_reason_phrase_is_one_ascii_line() -> None:
    assert _reason("click at (1, 2)\nis outside — the 9×9 image") == (
        "click at (1, 2) is outside ? the 9?9 image"
    )
    assert len(_reason("x" * 500)) == 200


def examples(root: Path, masks: dict[str, np.ndarray]) -> Path:
    for sub in ("train/images", "train/masks"):
        (root / sub).mkdir(parents=True)
    names = {"0": "road", "1": "Sign Symbol", "2": "car", "3": "bus"}
    (root / "classes.json").write_text(json.dumps({"classes": names}))
    for stem, labels in masks.items():
        Image.fromarray(np.zeros((*labels.shape, 3), np.uint8)).save(
            root / "train/images" / f"{stem}.png")  # fmt: skip
        Image.fromarray(labels.astype(np.uint8)).save(root / "train/masks" / f"{stem}.png")
    return root


def test_examples_come_from_the_labels_first(tmp_path) -> None:
    sign = np.zeros((20, 20), np.uint8)
    sign[5:15, 5:15] = 1
    labels = examples(tmp_path / "labels", {"new": sign})
    base = examples(tmp_path / "base", {"a": sign, "b": sign, "c": np.full((20, 20), 2)})
    pre = ExamplePreannotator([labels, base], predictor=lambda: None, shots=2)  # type: ignore
    found = [(e.root.name, e.stem) for e in pre.examples("sign_symbol")]
    assert found == [("labels", "new"), ("base", "a")]
    assert pre.examples("bus") == []  # known, but no image shows it
    assert pre(np.zeros((20, 20, 3), np.uint8), "bus") is None
    with pytest.raises(UnknownClass, match=r"unknown class 'zebra'.*bus, car, road, sign_symbol"):
        pre.examples("zebra")
