"""A 3D city model from a class map, as glTF binary (``.glb``) through trimesh.

The map is sampled on a grid of at most ``cells`` cells along its long side. Each 8-connected
footprint of a building class becomes a prism: the footprint's cells are triangulated on the
grid (shared corners, so the outline is exact) and extruded by trimesh to the building's
height. Other classes become flat, coloured ground polygons (one rectangle per run of cells in
a grid row). Units are metres (``pixel_size`` metres per image pixel); glTF's Y axis is up,
image right is +X and image down is +Z, so the model is not mirrored.

Heights: ``height_rule = "fixed"`` gives every building ``building_height`` metres;
``"area"`` gives ``clip(area_factor * sqrt(footprint m²), min_height, max_height)`` (larger
footprints, taller buildings).

trimesh comes with the ``aerial`` extra and is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.aerial.categories import Category
from dinoseg.io import InputError

#: Z-up (trimesh's extrusion) -> glTF's Y-up: (x, y, z) -> (x, z, -y)
Z_UP_TO_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)


@dataclass(frozen=True)
class MeshSettings:
    cells: int = 256
    pixel_size: float = 0.5
    height_rule: str = "fixed"
    building_height: float = 10.0
    area_factor: float = 0.5
    min_height: float = 3.0
    max_height: float = 60.0

    def height(self, area_m2: float) -> float:
        if self.height_rule == "fixed":
            return self.building_height
        if self.height_rule == "area":
            h = self.area_factor * float(np.sqrt(area_m2))
            return float(np.clip(h, self.min_height, self.max_height))
        raise InputError(f"height rule {self.height_rule!r}: use 'fixed' or 'area'")


def grid_labels(labels: np.ndarray, cells: int) -> tuple[np.ndarray, int]:
    """Labels sampled at cell centres (``cells`` along the long side) and the step in pixels."""
    step = max(1, int(np.ceil(max(labels.shape) / max(1, cells))))
    return np.ascontiguousarray(labels[step // 2 :: step, step // 2 :: step]), step


def footprint_triangulation(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid cells ``(N, 2)`` (row, col) -> 2-D vertices ``(V, 2)`` at cell corners, in
    (x = col, y = -row) units, and CCW faces ``(2N, 3)`` sharing corners between cells."""
    r, c = cells[:, 0], cells[:, 1]
    corners = np.stack(
        [np.stack([r, c], 1), np.stack([r + 1, c], 1), np.stack([r + 1, c + 1], 1),
         np.stack([r, c + 1], 1)], 1
    )  # (N, 4, 2): p00, p10, p11, p01
    unique, inverse = np.unique(corners.reshape(-1, 2), axis=0, return_inverse=True)
    idx = inverse.reshape(-1, 4)
    faces = np.concatenate([idx[:, [0, 1, 2]], idx[:, [0, 2, 3]]])
    vertices = np.stack([unique[:, 1], -unique[:, 0]], 1).astype(np.float64)
    return vertices, faces


def building_prisms(grid: np.ndarray, label: int, cell_m: float, s: MeshSettings) -> list[Any]:
    """One extruded prism (trimesh, Z up, metres) per 8-connected footprint of ``label``."""
    import trimesh
    from scipy import ndimage

    comps, n = ndimage.label(grid == label, structure=np.ones((3, 3), bool))
    prisms = []
    for i in range(1, n + 1):
        cells = np.argwhere(comps == i)
        vertices, faces = footprint_triangulation(cells)
        height = s.height(len(cells) * cell_m**2)
        prism = trimesh.creation.extrude_triangulation(vertices * cell_m, faces, height)
        prisms.append(prism)
    return prisms


def ground_polygons(grid: np.ndarray, label: int, cell_m: float) -> Any | None:
    """Flat rectangles (trimesh, Z up, z = 0) over the runs of ``label`` cells in each row."""
    import trimesh

    rects: list[tuple[int, int, int]] = []
    for row in range(grid.shape[0]):
        hit = np.flatnonzero(np.diff(np.r_[0, (grid[row] == label).astype(np.int8), 0]))
        rects.extend((row, a, b) for a, b in zip(hit[::2], hit[1::2], strict=True))
    if not rects:
        return None
    r = np.array(rects, np.float64)
    x0, x1, y0, y1 = r[:, 1] * cell_m, r[:, 2] * cell_m, -r[:, 0] * cell_m, -(r[:, 0] + 1) * cell_m
    z = np.zeros(len(r))
    v = np.stack(
        [np.stack([x0, y1, z], 1), np.stack([x1, y1, z], 1), np.stack([x1, y0, z], 1),
         np.stack([x0, y0, z], 1)], 1
    ).reshape(-1, 3)
    base = np.arange(len(r))[:, None] * 4
    faces = np.concatenate([base + np.array([0, 1, 2]), base + np.array([0, 2, 3])])
    return trimesh.Trimesh(vertices=v, faces=faces, process=False)


def _coloured(mesh: Any, colour: tuple[int, int, int], name: str) -> Any:
    import trimesh

    material = trimesh.visual.material.PBRMaterial(
        name=name, baseColorFactor=[*colour, 255], metallicFactor=0.0, roughnessFactor=0.9
    )
    mesh.visual = trimesh.visual.TextureVisuals(material=material)
    mesh.apply_transform(Z_UP_TO_Y_UP)
    return mesh


def city_scene(labels: np.ndarray, categories: list[Category], settings: MeshSettings) -> Any:
    """A trimesh ``Scene``: one mesh per class, named after it (buildings: all prisms);
    ``scene.metadata["buildings"]`` counts the prisms."""
    import trimesh

    grid, step = grid_labels(labels, settings.cells)
    cell_m = step * settings.pixel_size
    scene = trimesh.Scene()
    scene.metadata["buildings"] = 0
    for i, cat in enumerate(categories):
        if cat.building:
            parts = building_prisms(grid, i, cell_m, settings)
            scene.metadata["buildings"] += len(parts)
            mesh = trimesh.util.concatenate(parts) if parts else None
        else:
            mesh = ground_polygons(grid, i, cell_m)
        if mesh is not None and len(mesh.faces):  # type: ignore[attr-defined]
            scene.add_geometry(_coloured(mesh, cat.colour, cat.name), geom_name=cat.name)
    if not scene.geometry:  # an all-unknown map: a dark ground plate
        plate = ground_polygons(np.zeros_like(grid), 0, cell_m)
        scene.add_geometry(_coloured(plate, (40, 40, 40), "unknown"), geom_name="unknown")
    return scene


def export_glb(scene: Any, path: str | Path) -> int:
    """Write the scene as ``.glb``; returns the file size in bytes."""
    data = scene.export(file_type="glb")
    Path(path).write_bytes(data)
    return len(data)
