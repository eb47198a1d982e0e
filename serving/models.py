"""The model a process serves: built lazily once, following the registry's champion.

A registry spec (``models:/dinoseg-segmenter@champion``) is re-resolved through
:func:`dinoseg.modelspec.resolve_model_spec` at most every ``model_check_seconds``; a new
model id (a new champion version) loads the new checkpoint, the same id keeps the loaded one.

- resolution fails after a model was resolved (registry unreachable, alias gone): the last good
  model keeps serving, with a notice in the reply;
- no champion yet / no resolver (:class:`InputError`, :class:`ImportError`) and nothing resolved
  before: the fallback model (``prototype``) is served, with a notice;
- any other failure with nothing resolved before: :class:`TransientError` (the task retries).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dinoseg.io import InputError
from dinoseg.modelspec import parse_model_spec, resolve_model_spec
from dinoseg.served import ServedPredictor, load_served
from serving.config import ServingConfig

log = logging.getLogger(__name__)
_KEEP = 2  # predictors kept per process (the champion and the fallback)


class TransientError(RuntimeError):
    """A failure worth retrying (a service is down); the task retries with backoff."""


@dataclass
class Served:
    """What serves a request: the predictor, its model version and an optional notice."""

    predictor: ServedPredictor
    model_version: str
    notice: str | None = None


@dataclass
class _Resolution:
    path: str
    model_id: str
    checked: float


class ModelHolder:
    """Per-process cache of predictors keyed by (checkpoint, model id).

    Args:
        config: backbone / image size overrides and the check period.
        loader: builds a predictor from a spec (:func:`dinoseg.served.load_served` by default).
        clock: monotonic seconds (tests may pass a fake).
    """

    def __init__(
        self,
        config: ServingConfig,
        loader: Callable[..., ServedPredictor] = load_served,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._loader = loader
        self._clock = clock
        self._predictors: OrderedDict[tuple[str, str], ServedPredictor] = OrderedDict()
        self._resolved: dict[str, _Resolution] = {}
        self._unresolved: dict[str, tuple[float, str]] = {}  # spec -> (when, why) no model
        self.last_version: str | None = None  # model version of the last request served
        self._support_keys: dict[int, str] = {}  # id(predictor) -> support set encoded in it

    def _load(self, path: str, model_id: str | None = None) -> ServedPredictor:
        key = (path, model_id or path)
        if key in self._predictors:
            self._predictors.move_to_end(key)
            return self._predictors[key]
        cfg = self.config
        predictor = self._loader(
            path,
            backbone=cfg.backbone or None,
            layers=[int(x) for x in cfg.layers] or None,
            image_size=cfg.image_size or None,
            cache_bytes=int(cfg.feature_cache_mb) * 1024**2,
            device=cfg.device,
        )
        if model_id:
            predictor.model_id = model_id
        log.info("loaded model %s from %s", predictor.model_id, path)
        self._predictors[key] = predictor
        while len(self._predictors) > _KEEP:
            _, old = self._predictors.popitem(last=False)
            self._support_keys.pop(id(old), None)
        return predictor

    def set_support(
        self, predictor: ServedPredictor, key: str, images: Callable[[], tuple[Any, ...]]
    ) -> None:
        """Encode a support set unless ``predictor`` holds the one named ``key`` already.

        Args:
            key: identifies the support set (e.g. a hash of its files and the class name).
            images: returns ``(images, masks[, class_name])`` (the arguments of
                ``FewShotPredictor.set_support``) when the support must be encoded.
        """
        if self._support_keys.get(id(predictor)) == key:
            return
        self._support_keys.pop(id(predictor), None)
        predictor.set_support(*images())
        self._support_keys[id(predictor)] = key

    def _fallback(self, reason: str) -> Served:
        spec = self.config.fallback_model
        predictor = self._load(spec)
        return Served(predictor, predictor.model_id, f"{reason} — serving the {spec} model instead")

    def _resolve(self, spec: str) -> tuple[_Resolution | None, str | None]:
        """Re-resolve ``spec`` when due; returns (resolution or None, notice).

        Any failure with a model already resolved keeps that model (the registry's resolver
        reports an unreachable server as :class:`InputError` too, so the two cannot be told
        apart reliably); with none, :class:`InputError` / :class:`ImportError` (no champion,
        no resolver) mean "fall back" and anything else is transient.
        """
        known = self._resolved.get(spec)
        now = self._clock()
        if known is not None and now - known.checked < self.config.model_check_seconds:
            return known, None
        failed = self._unresolved.get(spec)
        if failed is not None and now - failed[0] < self.config.model_check_seconds:
            return None, failed[1]
        try:
            path, model_id = resolve_model_spec(spec)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}" if not isinstance(e, InputError) else str(e)
            if known is not None:
                known.checked = now  # retry after the next check period
                return known, f"{reason}; serving the last good model {known.model_id}"
            if isinstance(e, (InputError, ImportError)):
                self._unresolved[spec] = (now, reason)
                return None, reason
            raise TransientError(f"{spec}: model registry unreachable ({reason})") from e
        self._unresolved.pop(spec, None)
        self._resolved[spec] = _Resolution(path, model_id, now)
        return self._resolved[spec], None

    def get(self, spec: str | None = None) -> Served:
        """The predictor for ``spec`` (default: the configured model)."""
        served = self._serve(spec or self.config.model)
        self.last_version = served.model_version
        return served

    def _serve(self, spec: str) -> Served:
        if not parse_model_spec(spec).is_registry:
            predictor = self._load(spec)
            return Served(predictor, predictor.model_id)
        resolution, notice = self._resolve(spec)
        if resolution is None:
            return self._fallback(notice or f"{spec} cannot be resolved")
        predictor = self._load(resolution.path, resolution.model_id)
        return Served(predictor, resolution.model_id, notice)
