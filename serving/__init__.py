"""The serving layer: the ``segment`` (and ``aerial``) jobs without Celery.

Run in-process by the web app (``dinoseg demo --no-worker``) and wrapped by thin Celery tasks
(:mod:`workers.tasks`), so both paths run the same code::

    config.py    ServingConfig / ReviewConfig (params.yaml sections ``serving``, ``review``)
    request.py   parse_request: a validated ``segment`` request (paths inside the uploads folder)
    uploads.py   content-addressed uploads (file names carry the SHA-256 of the bytes)
    models.py    ModelHolder: the served predictor, following the registry's champion
    store.py     the results store: one folder per result, one schema, one id rule, atomic
    segment.py   SegmentJob: request -> records (+ review items built from the masks in memory)
    review.py    ReviewItem: what an annotation adapter needs, built once
    aerial.py    the aerial job: photo (+ annotated tiles) -> city map outputs
    progress.py  the progress-callback type

Imports the core (:mod:`dinoseg`) only: never gradio, celery, mlflow or label-studio.
"""
