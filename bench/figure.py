"""Make the README figure: support + mask | query + predicted mask (docs/result.jpg).

Usage: python bench/figure.py [--model prototype|CKPT_DIR] [--data ../shared/data/camvid]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dinoseg.io import load_image, load_mask
from dinoseg.predictor import load_predictor
from dinoseg.visualize import overlay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="prototype")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/camvid"))
    ap.add_argument("--support", default="0016E5_07959")
    ap.add_argument("--query", default="0016E5_08019")
    ap.add_argument("--class-id", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("docs/result.jpg"))
    args = ap.parse_args()
    val = args.data / "val"
    s_img = load_image(val / "images" / f"{args.support}.jpg")
    s_mask = load_mask(val / "masks" / f"{args.support}.png", class_id=args.class_id)
    q_img = load_image(val / "images" / f"{args.query}.jpg")
    pred = load_predictor(args.model)
    pred.set_support([s_img], [s_mask])
    (r,) = pred.predict([q_img])
    left = overlay(s_img, s_mask, colour=(40, 200, 80))
    right = overlay(q_img, r.mask)
    canvas = Image.fromarray(np.concatenate([left, np.full((left.shape[0], 8, 3), 255, np.uint8),
                                             right], axis=1))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), "support + mask", fill=(255, 255, 255))
    draw.text((left.shape[1] + 16, 8), f"query -> prediction (confidence {r.confidence:.2f})",
              fill=(255, 255, 255))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, quality=85)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
