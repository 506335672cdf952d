"""dehaze_ros: learned dehazing and metric depth for ROS 2 (DIACMPN, CVPR 2024).

The torch side (``models``, ``engine``, ``haze``, ``scenes``, ``dcp``) imports no rclpy, so it
is usable and testable without ROS; the nodes (``dehaze_node``, ``sample_camera``) wrap it.
"""

__version__ = "0.1.0"
