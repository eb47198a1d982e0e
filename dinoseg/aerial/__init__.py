"""Aerial photos to city maps: tiled inference, several methods, SAM refinement, 3D export.

::

    reader.py      open_large_image: validated, lazily read photos up to 150 MP
    tiling.py      overlapping tiles, raised-cosine blending, band-by-band accumulation
    features.py    Supports (multi-class support tiles), TileEncoder, class prototypes
    methods/       AerialMethod + fewshot | kmeans | sam-match | segformer
    ade20k.py      the documented ADE20K(150) -> city category mapping
    sam.py         SAM-family models and segment-anything's automatic mask generator
    refine.py      SAM boundary refinement of any class map
    postprocess.py small-segment removal, majority smoothing
    categories.py  class names, colours, which classes are buildings
    citymap.py     coloured map with legend, per-class area statistics
    mesh.py        3D city model (.glb) with trimesh
    config.py      AerialConfig: every knob, defaults <- params.yaml ``aerial`` <- flags
    build.py       build_method: the registry of method builders (the one list of methods)
    pipeline.py    run_aerial (what ``dinoseg aerial`` and the aerial job run)

The pure core: no web, queue or tracker imports. scikit-learn, scipy and trimesh (the
``aerial`` extra) are imported inside the functions that need them.
"""
