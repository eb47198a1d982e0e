"""Class names as people type them: one normal form, and the classes a project already knows.

A request names the thing it segments (``"Pedestrian"``, ``"sign symbol"``); the name travels
with the result, the review task and the label. Names are compared in their normal form
(:func:`normalize_class_name`: lower case, runs of spaces / underscores -> one ``_``), so
``"Sign Symbol"`` is CamVid's ``sign_symbol``; an empty name is :data:`PLACEHOLDER` (the
annotator chooses the class). A name no dataset knows yet is a new class.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from dinoseg.data.folder import class_key
from dinoseg.io import InputError

#: the class of a request that names none: annotators must give its regions a real class
PLACEHOLDER = "object"
MAX_LENGTH = 64
_ALLOWED = re.compile(r"^[\w\-.'()+&]+$")


def normalize_class_name(name: object) -> str:
    """The normal form of a class name; ``None`` or blank -> :data:`PLACEHOLDER`.

    Raises :class:`InputError` for a non-string, an over-long name or one with characters
    other than letters, digits and ``_ - . ' ( ) + &``.
    """
    if name is None:
        return PLACEHOLDER
    if not isinstance(name, str):
        raise InputError(f"a class name must be text, got {type(name).__name__}")
    norm = class_key(name)
    if not norm:
        return PLACEHOLDER
    if len(norm) > MAX_LENGTH:
        raise InputError(f"class name {name[:40]!r}...: at most {MAX_LENGTH} characters")
    if not _ALLOWED.match(norm):
        raise InputError(
            f"class name {name!r}: use letters, digits, spaces and _ - . ' ( ) + & only"
        )
    return norm


def class_names_of(folder: str | Path) -> list[str]:
    """The normalised class names of a dataset folder's ``classes.json`` (id order); ``[]``
    when the folder has none yet."""
    from dinoseg.data.folder import read_classes

    if not (Path(folder) / "classes.json").is_file():
        return []
    info = read_classes(folder)
    return [normalize_class_name(info.names[c]) for c in sorted(info.names)]


def known_classes(folders: Iterable[str | Path]) -> list[str]:
    """Every class the given dataset folders name (the base dataset, the labels folder ...),
    normalised, first occurrence first; the placeholder is never a known class."""
    seen: dict[str, None] = {}
    for folder in folders:
        for name in class_names_of(folder):
            if name != PLACEHOLDER:
                seen.setdefault(name, None)
    return list(seen)


def add_class(folder: str | Path, name: str) -> int:
    """The id of class ``name`` in ``folder/classes.json``, appended with the next free id
    (never the ignore or background label) when the folder does not know it yet.

    The file is rewritten atomically; callers that may race hold a lock around this call.
    """
    from dinoseg.data.folder import read_classes

    name = normalize_class_name(name)
    if name == PLACEHOLDER:
        raise InputError(f"{PLACEHOLDER!r} is not a class: choose the class of the region")
    path = Path(folder) / "classes.json"
    info = read_classes(folder)
    for cid, existing in info.names.items():
        if normalize_class_name(existing) == name:
            return cid
    special = (info.ignore_index, info.background_index)
    taken = set(info.names) | {i for i in special if i is not None}
    new_id = next(i for i in range(256) if i not in taken and i > max(info.names))
    if new_id > 254:
        raise InputError(f"{path}: no free class id left for {name!r} (masks are 8-bit)")
    data = json.loads(path.read_text())
    classes = data["classes"]
    if isinstance(classes, list):
        classes = {str(i): n for i, n in enumerate(classes)}
    classes[str(new_id)] = name
    data["classes"] = classes
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return new_id
