"""dehaze_ros: learned dehazing and metric depth for ROS 2 (DIACMPN, CVPR 2024).

The modules at this level and ``models``, ``backends`` are the ROS-free core (engine, networks,
haze physics, DCP, visibility, metric scale): no rclpy and no ROS message import, so they are
usable and tested without ROS. ``ros`` holds the node and everything that knows a ROS message,
parameter or launch argument; ``sim`` the simulated camera, ``tools`` programs around the node.
"""

__version__ = "0.1.0"
