"""Process helpers of the local stack, read from Linux ``/proc`` (elsewhere they find nothing).

- :func:`listener_pid`: which process listens on a TCP port (the socket inodes of
  ``/proc/net/tcp{,6}`` matched against ``/proc/<pid>/fd``; another user's processes are only
  visible to root), :func:`describe` names it;
- :func:`die_with_parent`: a child's pre-exec asking for SIGTERM when its parent dies;
- :func:`marked` and :func:`terminate`: every process whose environment carries a stack's id
  (``DINOSEG_STACK_ID``, inherited by children and grandchildren alike), and stopping them
  (SIGTERM, then SIGKILL), so that nothing a stack started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

STACK_ID = "DINOSEG_STACK_ID"
PROC = Path("/proc")


def _pids() -> list[int]:
    try:
        return sorted(int(p) for p in os.listdir(PROC) if p.isdigit())
    except OSError:
        return []


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:  # sl local_address rem_address st ... uid timeout inode
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    return inodes


def listener_pid(port: int) -> int | None:
    """The (lowest) pid of a process listening on TCP ``port``; None when none can be seen."""
    inodes = _listening_inodes(port)
    for pid in _pids() if inodes else []:
        with contextlib.suppress(OSError):
            for fd in os.scandir(PROC / str(pid) / "fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return pid
    return None


def describe(pid: int | None, width: int = 100) -> str:
    """``pid 123 (cmd args...)``, the command line shortened to ``width`` characters.

    The program and, for an interpreter, its script are named by their file names
    (``python3 label-studio start ...``): what the process is stays readable however deep
    the install path is."""
    if pid is None:
        return "a process this user cannot see (try `ss -ltnp` as root)"
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return f"pid {pid}"
    words = [os.path.basename(w) if w.startswith("/") else w for w in argv[:2]] + argv[2:]
    cmd = " ".join(" ".join(words).split())  # one line
    return f"pid {pid} ({cmd if len(cmd) <= width else cmd[: width - 3] + '...'})"


def running(pid: int) -> bool:
    """The process exists and has not finished exiting: not a zombie (an exited child nobody
    has reaped yet), or a zombie whose other threads still hold its files (and sockets)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return _exists(pid)  # no /proc: ask the kernel
    if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
        return True
    try:
        return len(os.listdir(PROC / str(pid) / "task")) > 1
    except OSError:
        return False


def started(pid: int) -> str | None:
    """When the process started (clock ticks since boot, ``/proc/<pid>/stat``), None if
    unknown: with the pid it names one process, even after the pid is reused."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent() -> None:
    """Child pre-exec (Linux): SIGTERM to the child when the thread that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def marked(stack_id: str) -> list[int]:
    """Pids (other than this process) whose environment has ``DINOSEG_STACK_ID=stack_id``."""
    needle = f"{STACK_ID}={stack_id}".encode()
    found = []
    for pid in _pids():
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if pid != os.getpid() and needle in environ.split(b"\0"):
            found.append(pid)
    return found


def terminate(pids: Iterable[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those still running after ``grace_s``; returns the pids that
    were running. Exited children of this process are reaped."""
    pids = [p for p in pids if running(p)]
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_reaped_or_running(p) for p in pids):
            time.sleep(0.1)
        if not any(running(p) for p in pids):
            break
    return pids


def _reaped_or_running(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return running(pid)
