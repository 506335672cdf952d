"""Child processes that never outlive their parent: the demo's nodes and the tests' nodes.

Each child runs in a session of its own (a terminal's Ctrl-C reaches only the parent, which stops
its children in order) and, on Linux, gets SIGTERM from the kernel when the parent dies without
cleaning up, even by SIGKILL. Stopping is SIGINT to the child's process group (a clean rclpy
shutdown), then SIGKILL for a child that has not exited in time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _child_setup():
    """A preexec_fn: SIGINT back to its default, and (Linux) SIGTERM when this process dies.

    A program started as a shell's background job (`cmd &`, nohup, some CI runners) inherits
    SIGINT *ignored*, and so would its children: then stop()'s SIGINT would do nothing and every
    child would wait for the SIGKILL. Python installs its Ctrl-C handler only where SIGINT is not
    ignored at start-up, so the child gets the default back before exec.
    """
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None  # no prctl(PR_SET_PDEATHSIG) here
    parent = os.getpid()

    def setup() -> None:
        # Runs between fork and exec: libc was loaded above, in the parent, so nothing here
        # takes a lock another thread of the parent might hold. Both settings survive exec.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None:
            prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM))
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


def start(
    command: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen:
    """Run ``command`` with stdout and stderr into ``log_path``, in its own session, bound to
    this process's life."""
    # The child writes to its own copy of the descriptor: ours is closed at once.
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup(),
        )


def signal_group(child: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the child's process group (it leads one), unless it was reaped: its
    pid may already belong to someone else."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass  # exited meanwhile


def stop(children: list[subprocess.Popen], timeout: float = 10.0) -> list[subprocess.Popen]:
    """SIGINT to every child at once, then wait; SIGKILL for each one still running after
    ``timeout`` s. Returns the children that had to be killed."""
    for child in children:
        signal_group(child, signal.SIGINT)
    killed = []
    for child in children:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            killed.append(child)
            signal_group(child, signal.SIGKILL)
            child.wait(5)
    return killed
