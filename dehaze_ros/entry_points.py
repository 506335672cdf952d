"""Console-script targets of the node programs (setup.py): the stop guard first, then the node.

`ros2 run` and `ros2 launch` execute the scripts that setup.py's console_scripts generate, and
such a script only imports the function named there and calls it: a node module's
`if __name__ == "__main__"` block never runs. These functions install the guard
(dehaze_ros.stop_signal) and import the node module afterwards, so that a Ctrl-C or SIGTERM while
torch, rclpy or OpenCV load ends the program with status 0 instead of a traceback.
Only the standard library and stop_signal are imported at this module's top, on purpose.
"""

from __future__ import annotations

from dehaze_ros import stop_signal


def dehaze_node() -> int:
    stop_signal.install()
    from dehaze_ros.dehaze_node import main  # torch, rclpy: seconds to load

    return main()


def sample_camera() -> int:
    stop_signal.install()
    from dehaze_ros.sim.sample_camera import main  # OpenCV, numpy, rclpy

    return main()
