"""The README's support-memory plot: mIoU against the labelled images retrieved per query, from
``bench/memory.py --out REPORT.json`` reports.

Each ``--series "LABEL|REPORT|MODEL[|ZERO_REPORT]"`` draws ``MODEL`` (0 images: the model
alone, read from ZERO_REPORT, default REPORT) and ``MODEL+memory@K`` for every K in REPORT.

Usage (README)::

    python bench/memory_plot.py --out docs/memory-curve.png \\
        --series "CamVid: prototype + memory|runs/bench/fused-camvid.json|prototype|\\
runs/bench/curve-camvid.json" --series ...
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

#: x positions of the retrieved-image counts
COUNTS = ["0", "5", "10", "20", "30", "50", "all"]


def points(report: dict, zero: dict, model: str) -> tuple[list[int], list[float]]:
    """(x positions in :data:`COUNTS`, mIoU) of ``model`` alone and with K retrieved images."""
    found = {"0": zero["models"][model]["metrics"]["miou"]}
    for name, m in report["models"].items():
        match = re.fullmatch(rf"{re.escape(model)}\+memory@(\d+|all)", name)
        if match and match.group(1) in COUNTS:
            found[match.group(1)] = m["metrics"]["miou"]
    keys = [c for c in COUNTS if c in found]
    return [COUNTS.index(c) for c in keys], [found[c] for c in keys]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--series", action="append", required=True,
                   metavar="LABEL|REPORT|MODEL[|ZERO_REPORT]")
    args = p.parse_args()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    styles = ["-o", "--s", ":^", "-.d"]
    colours: dict[str, str] = {}
    drawn: dict[str, int] = {}  # series drawn per dataset (picks the line style)
    for item in args.series:
        label, path, model, *zero_path = item.split("|")
        report = json.loads(Path(path).read_text())
        zero = json.loads(Path(zero_path[0]).read_text()) if zero_path else report
        dataset = label.split(":")[0]
        colour = colours.setdefault(dataset, f"C{len(colours)}")
        style = styles[drawn.get(dataset, 0) % len(styles)]
        drawn[dataset] = drawn.get(dataset, 0) + 1
        x, y = points(report, zero, model)
        ax.plot(x, y, style, color=colour, label=label)
    ax.set_xticks(range(len(COUNTS)), COUNTS)
    ax.set_xlabel("labelled images retrieved per query (memory = the train split)")
    ax.set_ylabel("mIoU (%), 1-shot episodes, novel classes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(args.out)


if __name__ == "__main__":
    main()
