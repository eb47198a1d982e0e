"""ADE20K (150 classes, SceneParsing order, as in SegFormer's ``id2label``) -> city categories.

ADE20K is photographed from the ground, so the mapping reads each class as it would look from
above in a city:

- **building**: built structures and what covers them (wall, building, ceiling, windowpane,
  door, house, skyscraper, hovel, tower, column, grandstand, booth, tent, awning, canopy,
  stairs, stairway, step, screen door, stage, fireplace, bannister, railing, escalator, and
  tank, i.e. storage tanks). A roof seen from above looks like a ceiling or a wall more than
  like anything else in ADE20K; ``floor`` (open paved ground from above) goes to land.
- **road**: traffic surfaces and what stands or moves on them: road, sidewalk, path, runway,
  dirt track, bridge, car, bus, truck, van, minibike, bicycle, airplane, person, streetlight,
  traffic light, pole, signboard, trade name.
- **water**: water, sea, river, lake, swimming pool, fountain, waterfall, boat, ship, pier.
- **vegetation**: tree, grass, plant, field, flower, palm.
- **land**: open ground: floor, earth, mountain, rock, sand, hill, land, rug (large flat
  textured ground from above), fence, base.
- **other** (``None``): sky and indoor objects (furniture, appliances, small things); they
  vote for no city category (a pixel whose mass is mostly "other" is unknown).

Every one of the 150 ids has an explicit entry (:data:`ADE20K_TO_CITY`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

#: SegFormer / ADE20K SceneParsing class names, id order 0..149.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "building": (
        "wall", "building", "ceiling", "windowpane", "door", "house", "skyscraper", "hovel",
        "tower", "column", "grandstand", "booth", "tent", "awning", "canopy", "stairs",
        "stairway", "step", "screen door", "stage", "fireplace", "bannister", "railing",
        "escalator", "tank",
    ),
    "road": (
        "road", "sidewalk", "path", "runway", "dirt track", "bridge", "car", "bus", "truck",
        "van", "minibike", "bicycle", "person", "streetlight", "traffic light", "pole",
        "signboard", "trade name", "airplane",
    ),
    "water": (
        "water", "sea", "river", "lake", "swimming pool", "fountain", "waterfall", "boat",
        "ship", "pier",
    ),
    "vegetation": ("tree", "grass", "plant", "field", "flower", "palm"),
    "land": ("floor", "earth", "mountain", "rock", "sand", "hill", "land", "rug", "fence", "base"),
})

#: ADE20K id -> city category name, or ``None`` ("other": no city category).
ADE20K_TO_CITY: Mapping[int, str | None] = MappingProxyType({
    i: next((cat for cat, names in _GROUPS.items() if name in names), None)
    for i, name in enumerate(ADE20K_CLASSES)
})


def mapping_matrix(city_classes: Sequence[str]) -> np.ndarray:
    """``(150, C + 1)`` 0/1 matrix: ADE20K id -> one of ``city_classes`` or the last column
    ("other", also for categories not in ``city_classes``). Rows sum to 1."""
    index = {name.strip().lower(): i for i, name in enumerate(city_classes)}
    m = np.zeros((len(ADE20K_CLASSES), len(city_classes) + 1), np.float32)
    for ade, cat in ADE20K_TO_CITY.items():
        m[ade, index.get(cat or "", len(city_classes))] = 1.0
    return m
