"""``dinoseg demo``: the web demo with its local stack (app + worker [+ Label Studio]).

A plug-in command (entry point ``demo = "webapp.cli"`` in the ``dinoseg.commands`` group):
``add_parser`` is cheap, the heavy imports happen in ``run``.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="start the web demo (app + Celery worker + Label Studio when installed)",
        description="Start the demo stack on embedded defaults (SQLite broker, sqlite MLflow "
        "store, all under $DINOSEG_HOME, default ./var), print its URLs; Ctrl-C stops it.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    p.add_argument("--port", type=int, default=7860, help="port of the web app (default: 7860)")
    p.add_argument(
        "--workers", type=int, default=1, metavar="N", help="Celery worker processes (default: 1)"
    )
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="run the model inside the app process (no Celery worker)",
    )
    p.add_argument(
        "--no-labelstudio", action="store_true", help="do not start Label Studio even if installed"
    )
    p.add_argument(
        "--no-ml-backend", action="store_true",
        help="do not start dinoseg's Label Studio ML backend (click-to-mask, pre-annotation)",
    )
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="also start an MLflow server on loopback over the tracking store "
        "(MLFLOW_TRACKING_URI or $DINOSEG_HOME/mlflow.db); the services then use it",
    )
    p.add_argument("--mlflow-port", type=int, default=5000, help="its port (default: 5000)")
    p.add_argument("--device", default=None,
                   help="where the model runs: auto (CUDA when present) | cpu | cuda | cuda:N | "
                   "mps (default: params.yaml serving.device, auto)")
    p.add_argument(
        "--project",
        default=None,
        metavar="DIR",
        help="project folder the services run in (its params.yaml; default: this checkout)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dinoseg.io import InputError
    from infra.stack import StackConfig, StackError, run_stack

    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    if args.project is not None and not (Path(args.project) / "params.yaml").is_file():
        raise InputError(f"--project {args.project}: no params.yaml there")
    if args.device is not None:
        from dinoseg.device import check_device_name

        check_device_name(args.device)  # e.g. cuda asked for on a machine without one
    cfg = StackConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        in_process=args.no_worker,
        labelstudio=False if args.no_labelstudio else None,
        ml_backend=not args.no_ml_backend,
        mlflow=args.mlflow,
        mlflow_port=args.mlflow_port,
        project=None if args.project is None else Path(args.project).resolve(),
        device=args.device,
    )
    try:
        return run_stack(cfg, say=lambda line: print(line, flush=True))
    except StackError as e:
        raise InputError(str(e)) from None
