"""Class names as people type them: one normal form, known classes, new classes get new ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dinoseg.data.classnames import (
    PLACEHOLDER,
    add_class,
    known_classes,
    normalize_class_name,
)
from dinoseg.io import InputError


def test_names_are_normalised() -> None:
    assert normalize_class_name("  Sign  Symbol ") == "sign_symbol"
    assert normalize_class_name("sign_symbol") == "sign_symbol"
    assert normalize_class_name("Traffic-Light") == "traffic-light"
    assert normalize_class_name("") == normalize_class_name(None) == PLACEHOLDER
    assert normalize_class_name(" _ ") == PLACEHOLDER
    for bad, message in [(3, "must be text"), ("a/b", "letters, digits"),
                         ('x" onload="y', "letters, digits"), ("a" * 65, "at most 64")]:
        with pytest.raises(InputError, match=message):
            normalize_class_name(bad)


def _folder(root: Path, classes: object, **extra: int) -> Path:
    root.mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"classes": classes, **extra}))
    return root


def test_known_classes_merge_folders_in_order(tmp_path) -> None:
    base = _folder(tmp_path / "base", {"0": "Sky", "1": "Road"}, ignore_index=2)
    labels = _folder(tmp_path / "labels", {"0": "sky", "1": "road", "3": "Pedestrian"})
    assert known_classes([base, labels, tmp_path / "missing"]) == ["sky", "road", "pedestrian"]


def test_a_new_class_gets_the_next_free_id_once(tmp_path) -> None:
    labels = _folder(tmp_path / "labels", {"0": "sky", "1": "road"}, ignore_index=2)
    assert add_class(labels, "Road") == 1  # known, by normal form
    assert add_class(labels, "traffic light") == 3  # 2 is the ignore label
    assert add_class(labels, "Traffic_Light") == 3
    assert add_class(labels, "bus") == 4
    data = json.loads((labels / "classes.json").read_text())
    assert data["classes"] == {"0": "sky", "1": "road", "3": "traffic_light", "4": "bus"}
    assert data["ignore_index"] == 2
    with pytest.raises(InputError, match="not a class"):
        add_class(labels, "")
    listed = _folder(tmp_path / "listed", ["a", "b"])
    assert add_class(listed, "c") == 2
    assert json.loads((listed / "classes.json").read_text())["classes"]["2"] == "c"
