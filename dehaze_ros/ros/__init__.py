"""The ROS side of dehaze_ros: the lifecycle node and everything that knows a ROS message,
parameter, topic or launch argument (see docs/ARCHITECTURE.md, "Where ROS ends").

Empty on purpose: the console scripts (entry_points) import this package before the stop guard
is installed, so nothing here may load rclpy, torch or OpenCV.
"""
