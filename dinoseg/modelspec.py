"""Model specs, parsed in one place: ``prototype`` | ``knn`` | a checkpoint directory |
``scheme:/...``.

A ``scheme:/...`` spec (``models:/dinoseg-segmenter@champion``) names a model in a registry; a
resolver plug-in turns it into a checkpoint directory. Resolvers are entry points in the
``dinoseg.model_resolvers`` group named by the scheme (the MLflow adapter in ``mlops`` registers
``models``), so the core never imports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Literal

from dinoseg.io import InputError

PROTOTYPE = "prototype"
KNN = "knn"  # the nearest-neighbour vote over labelled patches (training-free, like prototype)
RESOLVER_GROUP = "dinoseg.model_resolvers"
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):/")

Kind = Literal["prototype", "knn", "checkpoint", "registry"]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        text: the spec as given.
        kind: ``prototype`` / ``knn`` (training-free models), ``checkpoint`` (a directory path,
            checked when loaded) or ``registry`` (``scheme:/...``, resolved by a plug-in).
        scheme: the registry scheme (``models``) for a registry spec, else None.
    """

    text: str
    kind: Kind
    scheme: str | None = None

    @property
    def is_registry(self) -> bool:
        return self.kind == "registry"


def parse_model_spec(spec: object) -> ModelSpec:
    """Parse a model spec; :class:`InputError` when it is not a non-empty string."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"a model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec == PROTOTYPE:
        return ModelSpec(spec, "prototype")
    if spec == KNN:
        return ModelSpec(spec, "knn")
    match = _SCHEME.match(spec)
    if match is not None:
        return ModelSpec(spec, "registry", match.group(1))
    return ModelSpec(spec, "checkpoint")


def resolve_model_spec(spec: str) -> tuple[str, str]:
    """Turn a ``scheme:/...`` spec into ``(checkpoint_dir, model_id)`` through a resolver plug-in.

    A resolver takes the spec and returns a directory, or ``(directory, model_id)``; it raises
    :class:`InputError` with a clear message when the spec cannot be resolved.
    """
    parsed = parse_model_spec(spec)
    if not parsed.is_registry:
        raise InputError(f"{spec}: not a 'scheme:/...' model spec")
    found = [ep for ep in entry_points(group=RESOLVER_GROUP) if ep.name == parsed.scheme]
    if not found:
        raise InputError(
            f"{spec}: no resolver for '{parsed.scheme}:/' specs is installed (the MLflow adapter "
            "in mlops provides 'models:/'); pass a checkpoint directory or 'prototype'"
        )
    resolved = found[0].load()(parsed.text)
    if isinstance(resolved, tuple):
        path, model_id = resolved
        return str(path), str(model_id)
    return str(resolved), parsed.text
