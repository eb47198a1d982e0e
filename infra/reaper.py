"""``python -m infra.reaper STACK_ID``: stops what a stack started once the stack is gone.

The supervisor starts it before any service, in a session of its own (a signal to the
supervisor's process group does not reach it), reading a pipe whose other end only the
supervisor holds. The pipe closes when the supervisor ends in any way, SIGKILL included; the
reaper then stops every process whose environment carries ``DINOSEG_STACK_ID=STACK_ID``
(:func:`infra.procs.marked`: the services and whatever they started, e.g. MLflow's uvicorn or
the Label Studio server), SIGTERM first, SIGKILL after :data:`GRACE_S`. After a clean stop it
finds nothing left. Each process it had to stop is named on stdout (the stack's
``reaper.log``).
"""

from __future__ import annotations

import sys

from infra.procs import describe, marked, terminate

GRACE_S = 5.0


def reap(stack_id: str, grace_s: float = GRACE_S) -> list[str]:
    """Stop the processes of stack ``stack_id``; returns what each was (``pid N (cmd)``)."""
    names = {pid: describe(pid) for pid in marked(stack_id)}
    return [names[pid] for pid in terminate(names, grace_s)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m infra.reaper STACK_ID  (stdin: a pipe held by the supervisor)")
        return 2
    sys.stdin.buffer.read()  # returns at end of file: the supervisor is gone
    for name in reap(args[0]):
        print(f"stopped {name}, left by stack {args[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
