"""Fuzzed sensor_msgs/Image fields, shared by the node's chaos test and process_bag's fuzz test.

Plain values (no message class), so the same fuzz feeds an rclpy message over DDS and a rosbags
message written into a bag.
"""

from __future__ import annotations

import random

ENCODINGS = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "bgr16",
    "rgb16",
    "8UC3",
    "32FC1",
    "16UC1",
    "yuv422",
    "bayer_rggb8",
    "nv21",
    "",
    "x" * 300,
    "rgb8\x00junk",
]
MAX_DATA_BYTES = 3_000_000


def fuzzed_image_fields(rng: random.Random) -> dict:
    """height, width, encoding, is_bigendian, step, data: sizes up to 2^31-1, steps that do and
    do not match, encodings real and not, data lengths right, one short, or anything."""
    big = rng.random() < 0.3
    width = (
        rng.choice([0, 1, 2, 3, 7, 64, 640, 4096, 65535, 2**31 - 1]) if big else rng.randint(0, 700)
    )
    height = rng.choice([0, 1, 5, 480, 100_000, 2**31 - 1]) if big else rng.randint(0, 500)
    channels = rng.choice([1, 2, 3, 4, 6, 8])
    step = (
        rng.choice(
            [
                0,
                width * channels,
                width * channels + rng.randint(1, 9),
                rng.randint(0, 2**32 - 1),
                max(0, width * channels - 1),
            ]
        )
        % 2**32
    )
    length = rng.choice([0, 1, 100, step * height, step * height - 1, rng.randint(0, 2_000_000)])
    return {
        "height": height,
        "width": width,
        "encoding": rng.choice(ENCODINGS),
        "is_bigendian": rng.choice([0, 1, 0, 0]),
        "step": step,
        "data": rng.randbytes(max(0, min(length, MAX_DATA_BYTES))),
    }
