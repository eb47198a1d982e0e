"""``dinoseg loop simulate``: the active-learning loop measured with a simulated annotator.

A plug-in subcommand (entry point ``loop = "mlops.loop.cli"`` in the ``dinoseg.commands``
group). ``--in-process`` calls the functions the stack runs, without services; without it the
loop runs on the embedded stack it starts (workers, Label Studio, sync, ``dvc repro``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loop", help="the active-learning loop with a simulated annotator",
                       description=__doc__)  # fmt: skip
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    s = verbs.add_parser("simulate", help="rounds of segment -> pick -> label -> retrain -> test")
    s.add_argument("--pool", required=True, type=Path, help="dataset folder of the pool")
    s.add_argument("--pool-split", default="train")
    s.add_argument("--test", required=True, type=Path, help="dataset folder of the test images")
    s.add_argument("--test-split", default="val")
    s.add_argument("--classes", nargs="+", required=True, metavar="NAME",
                   help="the classes stakeholders ask for (the served system starts without them)")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--budget", type=int, default=10, help="labels per round")
    s.add_argument("--strategy", action="append", default=None,
                   choices=["uncertainty", "balanced", "random", "diverse"],
                   help="repeatable (default: random, the measured winner, and uncertainty)")
    s.add_argument("--seed", type=int, action="append", default=None,
                   help="repeatable (default: 0); the summary averages the seeds")
    s.add_argument("--guard", default="", metavar="DIR[:SPLIT]",
                   help="the gate's generality guard dataset (default: none)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--in-process", action="store_true",
                   help="call the same functions without services (fast experiments)")
    s.add_argument("--memory-only", action="store_true",
                   help="labels reach the support memory only: no retraining (what each half "
                   "of the loop buys)")
    m = verbs.add_parser("merge", help="reports of separate runs (e.g. one seed each) -> one "
                         "report.json and learning_curve.png")  # fmt: skip
    m.add_argument("reports", nargs="+", type=Path, metavar="REPORT_JSON")
    m.add_argument("--out", required=True, type=Path)


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import sys

    from dinoseg.io import InputError

    if args.verb == "merge":
        from mlops.loop.report import merge_reports, plot_curve, summarise, write_report

        report = merge_reports(list(args.reports))
        write_report(args.out, report)
        plot_curve(args.out, report)
        print(json.dumps(summarise(report["strategies"]), indent=1))
        return 0
    from mlops.loop.simulate import Settings, run_all

    if args.rounds < 1 or args.budget < 1:
        raise InputError("--rounds and --budget must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    settings = Settings(
        pool=args.pool.resolve(), pool_split=args.pool_split, test=args.test.resolve(),
        test_split=args.test_split, classes=list(args.classes), rounds=args.rounds,
        budget=args.budget, strategies=args.strategy or ["random", "uncertainty"],
        seeds=args.seed or [0], out=args.out.resolve(),
        mode="in-process" if args.in_process else "real", guard=args.guard,
    )  # fmt: skip
    from functools import partial

    from mlops.loop.report import summarise

    settings.extra["retrain"] = not args.memory_only
    if args.in_process:
        from mlops.loop.inprocess import InProcess

        report = run_all(settings, partial(InProcess, retrain=not args.memory_only))
    else:
        from mlops.loop.realstack import RealStack

        report = run_all(settings, partial(RealStack, retrain=not args.memory_only))
    print(json.dumps(summarise(report["strategies"]), indent=1))
    return 0
