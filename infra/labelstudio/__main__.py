"""``python -m infra.labelstudio start|serve|stop|status`` — Label Studio on loopback.

Exit status 0 on success, 1 with one line on stderr otherwise. ``start`` waits until
``/health`` answers and the API token is accepted (the first start migrates a fresh database:
about a minute), then leaves the server in the background; ``serve`` runs it in the
foreground until SIGTERM or Ctrl-C (the local stack's way); ``status`` exits 1 unless this
home's server is the one answering and it accepts the token.
"""

from __future__ import annotations

import argparse
import json
import sys

from infra.labelstudio import START_TIMEOUT, LabelStudioError, start, status, stop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.labelstudio", description=__doc__)
    ap.add_argument("command", choices=["start", "serve", "stop", "status"])
    ap.add_argument("--timeout", type=float, default=START_TIMEOUT, help="seconds to wait")
    args = ap.parse_args(argv)
    try:
        if args.command == "start":
            seconds = start(timeout=args.timeout)
            print(json.dumps({**status(), "started_in_s": round(seconds, 1)}))
        elif args.command == "serve":
            from infra.labelstudio.serve import serve

            return serve(timeout=args.timeout)
        elif args.command == "stop":
            print(json.dumps({"stopped": stop()}))
        else:
            info = status()
            print(json.dumps(info))
            return 0 if info["healthy"] else 1
    except LabelStudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
