"""``dinoseg`` command line: ``dinoseg predict | eval | ...``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and ``run(args)``.
Adapters outside the core add subcommands (``dinoseg demo`` from ``webapp``) as entry points in
the ``dinoseg.commands`` group, so the core never imports them.
User errors print one clear line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module
from importlib.metadata import entry_points

#: subcommand -> module (imported only when that subcommand runs)
COMMANDS = {
    "predict": "dinoseg.cli.predict",
    "eval": "dinoseg.cli.evaluate",
    "train": "dinoseg.cli.train",
    "distill": "dinoseg.cli.distill",
    "models": "dinoseg.cli.models",
    "aerial": "dinoseg.cli.aerial",
    "split": "dinoseg.cli.split",
    "memory": "dinoseg.cli.memory",
    "heads": "dinoseg.cli.heads",
    "export": "dinoseg.cli.export",
}
PLUGIN_GROUP = "dinoseg.commands"


def commands() -> dict[str, str]:
    """Subcommand -> module: the core's own plus installed plug-ins (a plug-in never shadows)."""
    found = {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}
    return {**found, **COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinoseg", description="Few-shot segmentation with a frozen DINOv2 (FS-DINO)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in commands().items():
        try:
            import_module(module).add_parser(sub)
        except ImportError as e:  # an adapter installed without its extras: say so when used
            sub.add_parser(name, help=f"(unavailable: {e})")
    return parser


def with_default_verb(argv: Sequence[str]) -> list[str]:
    """A command whose module names ``DEFAULT_VERB`` (and its ``VERBS``) gets that verb when
    its first argument is none of them: ``dinoseg aerial --image x`` = ``dinoseg aerial map
    --image x``."""
    argv = list(argv)
    module = commands().get(argv[0]) if argv else None
    if module is None:
        return argv
    try:
        found = import_module(module)
    except ImportError:  # an adapter without its extras: build_parser says so
        return argv
    default = getattr(found, "DEFAULT_VERB", None)
    verbs = (*getattr(found, "VERBS", ()), "-h", "--help")
    if default and (len(argv) == 1 or argv[1] not in verbs):
        argv.insert(1, default)
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    from dinoseg.backbone.packaged import PackagedWeightsError
    from dinoseg.io import InputError

    args = build_parser().parse_args(with_default_verb(sys.argv[1:] if argv is None else argv))
    try:
        return int(import_module(commands()[args.command]).run(args) or 0)
    except (InputError, PackagedWeightsError) as e:
        print(f"dinoseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
