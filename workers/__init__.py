"""Celery workers and the Label Studio review loop: thin adapters over :mod:`serving`.

``workers.app:app`` is the Celery application (configured from the environment through
:mod:`dinoseg.runtime`); the tasks in :mod:`workers.tasks` wrap the serving layer's jobs
(:mod:`serving.segment`, :mod:`serving.aerial`); the Label Studio adapter (project bootstrap,
brush RLE, outbox, annotation sync) is :mod:`workers.labelstudio`. See docs/workers.md.
"""
