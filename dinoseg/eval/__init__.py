"""Few-shot evaluation: the protocol and its reports.

- :mod:`dinoseg.eval.protocol`: :func:`~dinoseg.eval.protocol.evaluate` runs several named models
  on the same seeded episodes (one shared feature cache) and returns the JSON-ready report.
- :mod:`dinoseg.eval.report`: the side-by-side text table and ``write_outputs`` (report JSON +
  plots beside it).
- :mod:`dinoseg.eval.plots`: per-class IoU bars, confidence histograms, example overlays.

``dinoseg eval`` (:mod:`dinoseg.cli.evaluate`), the pipeline's ``evaluate`` stage and bench/ call
these; none of them computes or draws anything of its own.
"""
