"""City map outputs: statistics, coloured map with legend, the 3D model (.glb)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh
from aerial_helpers import NAMES

from dinoseg.aerial import mesh
from dinoseg.aerial.categories import UNKNOWN, categories_for, read_class_names
from dinoseg.aerial.citymap import area_stats, colour_table, map_with_legend
from dinoseg.aerial.config import AerialConfig
from dinoseg.aerial.mesh import MeshSettings, city_scene, export_glb, footprint_triangulation
from dinoseg.aerial.pipeline import write_outputs
from dinoseg.io import InputError


def _labels() -> np.ndarray:
    lab = np.zeros((40, 60), np.uint8)  # land
    lab[:8] = 1  # water
    lab[:, 28:32] = 4  # road
    lab[12:20, 4:14] = 2  # building A: 8 x 10 px
    lab[25:35, 40:44] = 2  # building B: 10 x 4 px
    lab[30:36, 0:6] = 3  # vegetation
    lab[39, 59] = UNKNOWN
    return lab


def test_area_stats_add_up():
    stats = area_stats(_labels(), categories_for(NAMES), pixel_size=0.5)
    fractions = [c["fraction"] for c in stats["classes"].values()] + [stats["unknown"]["fraction"]]
    assert sum(fractions) == pytest.approx(1.0, abs=1e-5)
    assert stats["classes"]["building"]["pixels"] == 80 + 40
    assert stats["classes"]["building"]["area_m2"] == 120 * 0.25
    assert stats["image"]["area_m2"] == 40 * 60 * 0.25


def test_map_has_class_colours_and_a_legend():
    cats = categories_for(NAMES)
    lab = _labels()
    img = np.asarray(map_with_legend(lab, cats, area_stats(lab, cats, 1.0)))
    assert img.shape[0] >= 40 and img.shape[1] > 60
    np.testing.assert_array_equal(img[15, 8], cats[2].colour)
    np.testing.assert_array_equal(colour_table(cats)[UNKNOWN], (0, 0, 0))
    legend = img[:, 60:]
    for cat in cats:  # every class has its swatch in the legend
        assert (legend == cat.colour).all(axis=2).any()


def test_footprint_triangulation_is_exact_and_counter_clockwise():
    cells = np.array([[0, 0], [0, 1], [1, 0]])
    v, f = footprint_triangulation(cells)
    assert len(v) == 8 and len(f) == 6  # shared corners
    tri = v[f]
    cross = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (
        tri[:, 1, 1] - tri[:, 0, 1]
    ) * (tri[:, 2, 0] - tri[:, 0, 0])
    assert (cross > 0).all()


def _load(data: bytes) -> trimesh.Scene:
    return trimesh.load(io.BytesIO(data), file_type="glb")


def test_glb_has_building_prisms_of_the_right_height(tmp_path):
    settings = MeshSettings(cells=64, pixel_size=0.5, building_height=12.0)
    scene = city_scene(_labels(), categories_for(NAMES), settings)
    assert scene.metadata["buildings"] == 2
    size = export_glb(scene, tmp_path / "city.glb")
    assert size == (tmp_path / "city.glb").stat().st_size
    loaded = _load((tmp_path / "city.glb").read_bytes())
    assert set(NAMES) <= set(loaded.geometry)
    building = loaded.geometry["building"]
    bodies = building.split(only_watertight=False)
    assert len(bodies) == 2
    for body in bodies:
        low, high = body.bounds
        assert low[1] == pytest.approx(0.0) and high[1] == pytest.approx(12.0)  # glTF: Y is up
        assert body.is_watertight
    footprints = sorted(round((b.bounds[1][0] - b.bounds[0][0]) * (b.bounds[1][2] - b.bounds[0][2]))
                        for b in bodies)
    assert footprints == [10, 20]  # 40 px and 80 px at 0.25 m² per px
    for name in ("land", "water", "road", "vegetation"):
        ground = loaded.geometry[name]
        assert np.ptp(ground.vertices[:, 1]) == pytest.approx(0.0)


def test_area_rule_makes_larger_footprints_taller():
    settings = MeshSettings(cells=64, pixel_size=2.0, height_rule="area", area_factor=1.0,
                            min_height=1.0, max_height=100.0)
    scene = city_scene(_labels(), categories_for(NAMES), settings)
    heights = sorted(np.ptp(b.vertices[:, 1]) for b in scene.geometry["building"].split(
        only_watertight=False))
    assert heights == pytest.approx([np.sqrt(160.0), np.sqrt(320.0)])
    with pytest.raises(InputError, match="height rule"):
        MeshSettings(height_rule="random").height(10.0)


def test_map_without_any_class_still_exports():
    scene = city_scene(np.full((20, 20), UNKNOWN, np.uint8), categories_for(NAMES), MeshSettings())
    assert list(scene.geometry) == ["unknown"]


def test_class_names_from_classes_json(tmp_path):
    (tmp_path / "classes.json").write_text('{"classes": {"0": "roof", "1": "grass"}}')
    names = read_class_names(tmp_path / "classes.json")
    assert names == ["roof", "grass"]
    cats = categories_for(names)
    assert cats[0].building and not cats[1].building
    (tmp_path / "classes.json").write_text('{"classes": {"0": "a", "2": "b"}}')
    with pytest.raises(InputError, match="without gaps"):
        read_class_names(tmp_path)


def test_outputs_are_all_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    stats = write_outputs(_labels(), list(NAMES), AerialConfig(mesh_cells=32), out)
    assert stats["buildings"] == 2 and len(list(out.iterdir())) == 5

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mesh, "export_glb", broken)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(_labels(), list(NAMES), AerialConfig(), tmp_path / "failed")
    assert list((tmp_path / "failed").iterdir()) == []  # no partial file, no temp folder
