"""Label Studio JSON <-> masks: the labelling config, brush RLE predictions, annotations.

A brush region is Label Studio's RLE of an RGBA image (``converter.brush``); the mask is its
alpha channel. Our predictions carry the placeholder label ``object`` (a few-shot request names
no class); the annotator relabels the region with a dataset class. Only class-labelled regions
come back as labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from dinoseg.io import InputError

FROM_NAME = "mask"
TO_NAME = "image"
CLICK_NAME = "click"
BOX_NAME = "box"
PLACEHOLDER = "object"
MAX_SIDE = 20_000


def label_config(class_names: Sequence[str]) -> str:
    """The review project's labelling config.

    From top to bottom: a header with the class asked for (``$class_name``) and the context
    line (``$context``); the query image (``$image``) with BrushLabels (one label per class and
    the placeholder), smart KeyPointLabels (click: positive, Alt+click: negative) and smart
    RectangleLabels with the same labels, served by the ML backend; the support image
    (``$support_image``). Only ``image`` is required in task data: the other three are shown by
    Header / Markdown tags, which have no ``name`` and so are not required keys (Label Studio
    refuses to import a task, or to save a config over tasks, missing a key of a named tag).
    """
    names = [*class_names, PLACEHOLDER]
    labels = "".join(f"<Label value={quoteattr(n)}/>" for n in names)
    smart = "".join(f'<Label value={quoteattr(n)} smart="true"/>' for n in names)
    return (
        "<View>"
        '<Header value="Class asked for: $class_name" size="4"/>'
        '<Markdown value="$context"/>'
        f'<Image name="{TO_NAME}" value="$image" zoom="true" zoomControl="true"/>'
        f'<BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</BrushLabels>'
        f'<KeyPointLabels name="{CLICK_NAME}" toName="{TO_NAME}" smart="true">{smart}'
        "</KeyPointLabels>"
        f'<RectangleLabels name="{BOX_NAME}" toName="{TO_NAME}" smart="true">{smart}'
        "</RectangleLabels>"
        '<Header value="Fix the mask, then give every region a class (not &quot;object&quot;). '
        'Smart tools: click = object, Alt+click = not the object, or drag a rectangle." size="6"/>'
        '<Header value="Support: what the class looks like" size="6"/>'
        '<Markdown value="![support]($support_image)"/>'
        "</View>"
    )


def mask_to_result(mask: np.ndarray, label: str = PLACEHOLDER) -> dict[str, Any]:
    """A brush region (Label Studio result) for a (H, W) bool mask."""
    from label_studio_sdk.converter.brush import mask2rle

    h, w = mask.shape
    rle = mask2rle(np.asarray(mask, bool).astype(np.uint8) * 255)
    return {
        "from_name": FROM_NAME, "to_name": TO_NAME, "type": "brushlabels",
        "original_width": int(w), "original_height": int(h), "image_rotation": 0,
        "value": {"format": "rle", "rle": [int(x) for x in rle], "brushlabels": [label]},
    }  # fmt: skip


def _size(result: Mapping[str, Any]) -> tuple[int, int]:
    w, h = result.get("original_width"), result.get("original_height")
    if not all(isinstance(v, int) and 0 < v <= MAX_SIDE for v in (w, h)):
        raise InputError(f"brush region: bad size {w}x{h}")
    return int(h), int(w)  # type: ignore[arg-type]


def result_to_mask(result: Mapping[str, Any]) -> tuple[np.ndarray, str]:
    """Decode one brush region into ((H, W) bool mask, its label).

    Raises :class:`InputError` on a malformed region (bad RLE, wrong length, no label).
    """
    from label_studio_sdk.converter.brush import decode_rle

    h, w = _size(result)
    value = result.get("value") or {}
    rle, labels = value.get("rle"), value.get("brushlabels")
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise InputError(f"brush region: expected exactly one label, got {labels!r}")
    if not isinstance(rle, list) or not rle or not all(
        isinstance(x, int) and 0 <= x < 256 for x in rle
    ):
        raise InputError("brush region: the RLE is not a list of bytes")
    declared = int.from_bytes(bytes(rle[:4]), "big") if len(rle) >= 4 else -1
    if declared != h * w * 4:  # checked before decoding: the header sizes the output array
        raise InputError(f"brush region: RLE declares {declared} values, expected {h}x{w}x4")
    try:
        flat = decode_rle(bytes(rle))
    except (ValueError, IndexError) as e:
        raise InputError(f"brush region: malformed RLE ({e})") from e
    if flat.size != h * w * 4:
        raise InputError(f"brush region: RLE holds {flat.size} values, expected {h}x{w}x4")
    return flat.reshape(h, w, 4)[:, :, 3] > 127, labels[0]


def annotation_to_label_map(
    results: Sequence[Mapping[str, Any]],
    class_ids: Mapping[str, int],
    shape: tuple[int, int],
    fill: int,
) -> tuple[np.ndarray, int]:
    """Paint an annotation's class-labelled brush regions into a class-index map.

    Args:
        results: the annotation's ``result`` list (non-brush results are ignored).
        class_ids: label name -> class index.
        shape: (H, W) of the image.
        fill: label of the pixels no region covers (background or ignore index).

    Returns:
        ((H, W) uint8 class indices, number of placeholder regions left unlabelled).
    """
    out = np.full(shape, fill, np.uint8)
    placeholders = 0
    for result in results:
        if result.get("type") != "brushlabels":
            continue
        mask, label = result_to_mask(result)
        if mask.shape != shape:
            raise InputError(f"brush region is {mask.shape[::-1]}, the image {shape[::-1]}")
        if label == PLACEHOLDER:
            placeholders += 1
            continue
        if label not in class_ids:
            raise InputError(f"brush region: unknown label {label!r}")
        out[mask] = class_ids[label]
    return out, placeholders
