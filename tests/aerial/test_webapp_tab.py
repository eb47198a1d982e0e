"""The webapp's aerial tab: it builds inside a page, and its job makes a city map."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from aerial_helpers import city_tile
from PIL import Image

from dinoseg.io import InputError
from webapp.aerial_tab import build_aerial_tab, make_city_map


def test_tab_builds_with_a_3d_viewer():
    with gr.Blocks() as demo, gr.Tab("Aerial"):
        build_aerial_tab()
    kinds = {type(b).__name__ for b in demo.blocks.values()}
    assert {"Model3D", "Dataframe", "Image", "Radio", "Checkbox", "Button"} <= kinds


def test_job_writes_map_stats_and_model(tmp_path):
    image, _ = city_tile(84, 112, seed=3)
    Image.fromarray(image).save(tmp_path / "photo.png")
    seen = []
    map_path, rows, glb, paths, summary = make_city_map(
        str(tmp_path / "photo.png"), None, None, "kmeans", False, tile=112, k=3,
        out_root=tmp_path / "results", progress=lambda s, d, n: seen.append(s),
    )
    assert np.asarray(Image.open(map_path)).shape[1] > 112
    assert [r[0] for r in rows][:3] == ["cluster 0", "cluster 1", "cluster 2"]
    assert sum(r[1] for r in rows) == pytest.approx(100, abs=0.1)
    assert glb.endswith("city.glb") and len(paths) == 5 and "kmeans" in summary
    assert seen and seen[-1] == "segment"


def test_job_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="upload an aerial photo"):
        make_city_map(None, None, None, "fewshot", False)
    with pytest.raises(InputError, match="needs at least one annotated tile"):
        make_city_map(str(tmp_path / "x.png"), None, None, "fewshot", False)
    with pytest.raises(InputError, match="one mask each"):
        make_city_map(str(tmp_path / "x.png"), ["a.png"], [], "fewshot", False)
