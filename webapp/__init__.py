"""The dinoseg web demo: a Gradio app over the core predictor, served in-process or by workers.

Layout::

    inputs.py     widget values -> validated support/query arrays (clear InputError messages)
    uploads.py    content-addressed storage of inputs + the ``dinoseg.segment`` request
    backends/     where the work runs: in-process (local) or the Celery workers (celery)
    results.py    a ``dinoseg.segment`` reply -> what the page shows
    callbacks.py  the event handlers (no Gradio layout)
    app.py        build_app(backend) -> gr.Blocks (layout + wiring only)
    examples.py   offline examples built from images shipped in installed packages
    serve.py      launch options (host, upload limit, basic auth from the environment)
    cli.py        ``dinoseg demo`` (starts the local stack through infra.stack)

Nothing runs at import time; ``python -m webapp`` serves the app alone.
"""
