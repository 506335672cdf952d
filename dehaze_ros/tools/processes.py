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


def _parent_death_signal():
    """A preexec_fn that makes a child get SIGTERM when this process dies (Linux); None where
    prctl(PR_SET_PDEATHSIG) does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        # Runs between fork and exec: libc was loaded above, in the parent, so nothing here
        # takes a lock another thread of the parent might hold. The signal survives exec.
        prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return set_death_signal


def start(command: list[str], log_path: Path, env: dict[str, str],
          cwd: Path | None = None) -> subprocess.Popen:
    """Run ``command`` with stdout and stderr into ``log_path``, in its own session, bound to
    this process's life."""
    # The child writes to its own copy of the descriptor: ours is closed at once.
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True, preexec_fn=_parent_death_signal())


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
