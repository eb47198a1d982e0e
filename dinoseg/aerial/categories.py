"""City categories: names, map colours and 3D heights.

Labels are class indices into a list of :class:`Category`; :data:`UNKNOWN` (255) marks pixels
no class claims. The default list is the Dubai dataset's (``../shared/data/dubai``):
land, water, building, vegetation, road. Any ``classes.json`` (dataset folder format) can
replace it; known names get their usual map colour, others a palette colour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from dinoseg.io import InputError

UNKNOWN = 255
UNKNOWN_COLOUR = (0, 0, 0)
#: Map colours of the usual city categories (RGB).
KNOWN_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "land": (214, 190, 140),
        "water": (40, 110, 210),
        "building": (200, 60, 50),
        "vegetation": (60, 160, 60),
        "road": (120, 120, 120),
    }
)
DEFAULT_CLASS_NAMES = ("land", "water", "building", "vegetation", "road")
#: Colours for classes / clusters without a known name.
PALETTE = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (150, 150, 150), (120, 60, 180), (170, 110, 40),
    (255, 150, 150), (100, 200, 200), (200, 200, 100), (60, 60, 140), (140, 200, 90),
    (250, 100, 200),
)
#: Classes extruded in the 3D model by default (others are ground polygons).
BUILDING_NAMES = frozenset({"building", "buildings", "house", "roof"})


@dataclass(frozen=True)
class Category:
    """One map class: its ``name``, ``colour`` (RGB) and whether it is extruded (``building``)."""

    name: str
    colour: tuple[int, int, int]
    building: bool = False


def categories_for(names: list[str] | tuple[str, ...]) -> list[Category]:
    """Categories for class names (label ``i`` = ``names[i]``)."""
    if not names:
        raise InputError("at least one class is needed")
    if len(names) >= UNKNOWN:
        raise InputError(f"at most {UNKNOWN - 1} classes, got {len(names)}")
    out = []
    for i, name in enumerate(names):
        key = name.strip().lower()
        colour = KNOWN_COLOURS.get(key, PALETTE[i % len(PALETTE)])
        out.append(Category(name, colour, building=key in BUILDING_NAMES))
    return out


def read_class_names(path: str | Path) -> list[str]:
    """Class names (ids 0..C-1, contiguous) from a dataset ``classes.json`` or its folder."""
    from dinoseg.data.folder import read_classes

    p = Path(path)
    info = read_classes(p.parent if p.name == "classes.json" else p)
    ids = sorted(info.names)
    if ids != list(range(len(ids))):
        raise InputError(f"{path}: class ids must be 0..{len(ids) - 1} without gaps, got {ids}")
    return [info.names[i] for i in ids]
