"""``python -m infra.labelstudio serve``: Label Studio as a child of this process, until SIGTERM.

The local stack's way to run it (:func:`infra.stack.plan`):

- a server of this home already on the port (left by ``start``) is stopped first, so the server
  is always this process's child; anything else on the port ends ``serve`` with one line
  naming the port and the process holding it (:func:`infra.labelstudio.check_port`);
- the server writes to this process's stdout (the stack's ``labelstudio.log``) and gets SIGTERM
  if this process dies (parent-death signal, set from the main thread, which stays);
- :data:`READY_LINE` is printed once the server answers ``/health`` and accepts our token;
- SIGTERM or SIGINT stops the server (SIGKILL after ``STOP_TIMEOUT``); a server that exits on
  its own ends ``serve`` with status 1.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

from dinoseg import runtime
from infra.labelstudio import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Paths,
    check_port,
    launch,
    stop,
    wait_ready,
)
from infra.procs import die_with_parent, terminate

READY_LINE = "dinoseg: Label Studio is up"


class _Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _say(line: str) -> None:
    print(line, flush=True)


def serve(env: Mapping[str, str] | None = None, timeout: float = START_TIMEOUT,
          say: Callable[[str], None] = _say) -> int:  # fmt: skip
    """Run Label Studio until SIGTERM / SIGINT (returns 0) or until it exits (returns 1).

    Raises:
        LabelStudioError: the port is held by something else, or the server did not come up.
    """
    env = dict(os.environ if env is None else env)
    url, paths = runtime.label_studio_url(env), Paths.of(env)
    previous = check_port(env)
    if previous is not None:
        say(f"stopping this home's Label Studio (pid {previous}) to run it here")
        stop(env)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_stop)
    proc = launch(env, preexec_fn=die_with_parent)
    try:
        seconds = wait_ready(proc, env, timeout)
        say(f"{READY_LINE} at {url} (pid {proc.pid}, {seconds:.1f} s)")
        code = proc.wait()
        say(f"Label Studio exited with status {code}; see {paths.log}")
        return 1
    except _Stop:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        terminate([proc.pid], STOP_TIMEOUT)
        paths.pid.unlink(missing_ok=True)
