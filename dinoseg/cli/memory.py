"""``dinoseg memory build | add | info``: the support memory of labelled images (docs/memory.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dinoseg.backbone import DEFAULT_BACKBONE
from dinoseg.io import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memory", help="build or extend a support memory of labelled images")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    b = verbs.add_parser("build", help="sync a memory with dataset folders (encodes new images)")
    b.add_argument(
        "--data", action="append", required=True, metavar="DIR[:SPLIT]",
        help="dataset folder and split (default train); repeat, later ones win (data/labels)",
    )  # fmt: skip
    b.add_argument("--out", type=Path, required=True, help="memory directory")
    b.add_argument("--backbone", default=DEFAULT_BACKBONE, help="backbone spec")
    b.add_argument("--layer", type=int, default=None, help="block kept (default 10)")
    b.add_argument("--image-size", type=int, default=None, help="long side (default 336)")
    b.add_argument("--keep", action="store_true", help="keep images that left the sources")
    b.add_argument("--feature-cache", type=Path, default=None, metavar="DIR",
                   help="backbone feature cache shared with dinoseg eval")  # fmt: skip
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    a = verbs.add_parser("add", help="add one labelled image (a class-index PNG)")
    a.add_argument("--memory", type=Path, required=True, help="memory directory")
    a.add_argument("--image", type=Path, required=True)
    a.add_argument("--labels", type=Path, required=True, help="class-index PNG")
    a.add_argument("--classes", type=Path, required=True, help="the labels' classes.json")
    a.add_argument("--source", default=None, help="provenance (default: the image path)")
    a.add_argument("--complete", nargs="+", default=[], metavar="NAME",
                   help="classes labelled wherever they are in the image: its unlabelled "
                   "pixels are examples of 'not that class' (a one-class label)")
    i = verbs.add_parser("info", help="print a memory's manifest")
    i.add_argument("memory", type=Path)


def make_encoder(
    backbone: str, layer: int | None, image_size: int | None, feature_cache: Path | None = None
) -> Any:
    """A :class:`~dinoseg.memory.MemoryEncoder` for these options (defaults: block 10, 336 px)."""
    from dinoseg.backbone import load_backbone
    from dinoseg.memory.encoder import DEFAULT_LAYER, DEFAULT_MEMORY_SIZE, MemoryEncoder

    layer = layer or DEFAULT_LAYER
    bb = load_backbone(backbone, layers=[layer])
    encode = None
    if feature_cache is not None:
        from dinoseg.feature_cache import FeatureCache

        cache = FeatureCache(max_bytes=0, disk_dir=feature_cache)
        encode = lambda x: cache.encode(bb, x)  # noqa: E731
    return MemoryEncoder(
        bb, image_size=image_size or DEFAULT_MEMORY_SIZE, layer=layer, encode=encode
    )


def open_memory(text: str, backbone: Any, image_size: int | None, memory_dir: Path | None) -> Any:
    """``--memory`` of eval / predict: a memory directory, or ``DATA[:SPLIT]`` built (synced)
    with ``backbone`` into ``memory_dir`` (default ``$DINOSEG_CACHE/memory/<key>``)."""
    import hashlib

    from dinoseg.cache import cache_dir
    from dinoseg.memory.build import build_memory, parse_source
    from dinoseg.memory.encoder import DEFAULT_LAYER, DEFAULT_MEMORY_SIZE, MemoryEncoder
    from dinoseg.memory.store import SupportMemory

    if (Path(text) / "index.safetensors").is_file():
        return SupportMemory.open(text)
    source = parse_source(text)
    if not (source.root / "classes.json").is_file():
        raise InputError(f"--memory {text}: neither a support memory nor a dataset folder")
    layer = DEFAULT_LAYER if DEFAULT_LAYER in backbone.layers else max(backbone.layers)
    encoder = MemoryEncoder(backbone, image_size=image_size or DEFAULT_MEMORY_SIZE, layer=layer)
    if memory_dir is None:
        key = f"{source.root.resolve()}:{source.split}:{encoder.settings}"
        memory_dir = cache_dir("memory") / hashlib.sha256(key.encode()).hexdigest()[:16]
    memory, _ = build_memory(memory_dir, [source], encoder)
    return memory


def _build(args: argparse.Namespace) -> int:
    from dinoseg.memory.build import build_memory, parse_source

    sources = [parse_source(t) for t in args.data]
    encoder = make_encoder(args.backbone, args.layer, args.image_size, args.feature_cache)
    memory, stats = build_memory(
        args.out, sources, encoder, prune=not args.keep, progress=not args.no_progress
    )
    print(json.dumps({
        "memory": str(args.out), "version": memory.version, "images": len(memory),
        "added": stats.added, "unchanged": stats.unchanged, "removed": stats.removed,
        "skipped_sources": list(stats.skipped_sources),
    }))  # fmt: skip
    return 0


def _add(args: argparse.Namespace) -> int:
    from dinoseg.data.folder import read_classes
    from dinoseg.io import load_image, load_label_map
    from dinoseg.memory.store import SupportMemory

    if args.classes.name != "classes.json":
        raise InputError(f"--classes {args.classes}: give a dataset's classes.json")
    info = read_classes(args.classes.parent)
    from dinoseg.memory.encoder import load_encoder

    settings = SupportMemory.open(args.memory).settings
    memory = SupportMemory.open(args.memory, encoder=load_encoder(settings))
    image, labels = load_image(args.image), load_label_map(args.labels)
    added = memory.add(image, labels, info.names, args.source or str(args.image),
                       complete=args.complete)
    print(json.dumps({"memory": str(args.memory), "added": added, "version": memory.version}))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.verb == "build":
        return _build(args)
    if args.verb == "add":
        return _add(args)
    from dinoseg.memory.store import SupportMemory

    memory = SupportMemory.open(args.memory)
    print((memory.root / "manifest.json").read_text(encoding="utf-8"), end="")
    return 0
