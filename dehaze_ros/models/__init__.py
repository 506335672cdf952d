"""The one definition of each network of dehaze_ros (torch only, no rclpy).

config = get_model_config("diacmpn-rt")          # or ModelConfig.from_dict(checkpoint["model_config"])
dehazer = build_dehazer(config)                  # hazy RGB [0,1] -> dehazed RGB (not clamped)
dehazed, branch_depth_m = dehazer.forward_with_depth(hazy)
depth_net = build_depth_net(config)              # RGB [0,1] -> B x 1 x H x W depth in metres
"""

from dehaze_ros.models.build import build_dehazer, build_depth_net, count_macs, count_parameters
from dehaze_ros.models.config import PRESETS, ModelConfig, get_model_config
from dehaze_ros.models.dehazer import Dehazer
from dehaze_ros.models.depth_net import DepthNet

__all__ = [
    "PRESETS",
    "Dehazer",
    "DepthNet",
    "ModelConfig",
    "build_dehazer",
    "build_depth_net",
    "count_macs",
    "count_parameters",
    "get_model_config",
]
