"""The early stop guard of the node programs: a SIGINT or SIGTERM is remembered, not raised.

Loading torch, rclpy and OpenCV takes a second or more. With Python's default handlers a Ctrl-C
in that second prints a KeyboardInterrupt traceback from inside an import and the process dies
by the signal (`ros2 launch`: "process has died ... exit code -2"); a SIGTERM kills it outright.
So a program installs these handlers before its heavy imports (dehaze_ros.entry_points for
the console scripts, the `__main__` block of a node module for `python -m`) and looks at
STOP_REQUESTED once they are loaded. This module imports nothing heavy, on purpose.
"""

from __future__ import annotations

import signal


class StopRequest:
    """``threading.Event``'s ``set()`` / ``is_set()`` without its lock, for a signal handler.

    Python runs a handler in the main thread between two bytecodes, so it can land inside the
    handler that came before it: the kernel's parent-death signal (tools/processes.py) arrives
    once for each thread of the dying parent, several SIGTERMs in a row. An Event's set() takes a
    non-reentrant lock, and a set() interrupted while holding it, entered again by the next
    handler, waits for itself for ever (a node left running after its parent died). A plain
    attribute needs no lock: under the GIL its store is atomic and every thread sees it.
    """

    def __init__(self) -> None:
        self._flag = False

    def set(self) -> None:
        self._flag = True

    def is_set(self) -> bool:
        return self._flag


# Set by the first SIGINT or SIGTERM; the programs look at it at safe points. Read it as
# `stop_signal.STOP_REQUESTED` (not imported by name), so that a test can replace it.
STOP_REQUESTED = StopRequest()


def request_stop(signum, frame) -> None:
    """SIGINT/SIGTERM handler: the first asks for a clean stop; a later one interrupts whatever
    runs (a model load that hangs, say) with KeyboardInterrupt. Takes no lock (StopRequest)."""
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt(signal.Signals(signum).name)
    STOP_REQUESTED.set()


def install() -> None:
    """Route SIGINT and SIGTERM to request_stop."""
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def restore_defaults() -> None:
    """Python's own handlers again (KeyboardInterrupt on SIGINT, death on SIGTERM), for a program
    that lets rclpy's handlers take over after its imports: rclpy chains to these."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
