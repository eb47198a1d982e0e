"""Pictures of results: the support sheet a reviewer sees."""

from __future__ import annotations

import numpy as np

from dinoseg.visualize import FG_COLOUR, support_sheet


def test_support_sheet_puts_examples_side_by_side_with_outlines() -> None:
    a = np.full((40, 80, 3), 100, np.uint8)
    b = np.full((60, 60, 3), 50, np.uint8)
    ma = np.zeros((40, 80), bool)
    ma[10:30, 20:60] = True
    mb = np.zeros((60, 60), bool)
    mb[5:20, 5:20] = True
    sheet = support_sheet([a, b], [ma, mb], height=80, gap=4)
    assert sheet.shape == (80, 160 + 4 + 80, 3)
    assert (sheet[:, 160:164] == 255).all()  # the gap
    first = sheet[:, :160]
    outline = (first == FG_COLOUR).all(axis=-1)
    assert outline[20:60, 40:120].any() and not outline[:15].any()  # around the mask only
    assert (first[0, 0] == 100).all()  # outside the mask: the image, untinted
    inside = first[40, 80].astype(int)
    assert inside[0] > 100 and inside[2] < 100  # tinted toward the mask colour
