"""Celery workers and the Label Studio review loop: thin adapters over :mod:`dinoseg`.

``workers.app:app`` is the Celery application (configured from the environment through
:mod:`dinoseg.runtime`); the tasks live in :mod:`workers.tasks`; the Label Studio adapter
(project bootstrap, brush RLE, outbox, annotation sync) in :mod:`workers.labelstudio`.
See docs/workers.md.
"""
