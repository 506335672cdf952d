"""sample_camera: a hazy camera stream (sensor_msgs/Image + CameraInfo) for demos and tests.

Sources (parameter `source`):
  scene   built in, no files: the procedural renderer (dehaze_ros.sim.scenes) with a camera driving
          through one random scene, hazed with the atmospheric scattering model; the haze density
          beta drifts slowly between beta_min and beta_max so the dehazer sees thin and thick haze.
  folder  every image file in `path` (sorted), looped; published as they are (real hazy photos).
  video   a video file at `path`, looped.

Topics (relative, remap them): `image` (Image), `image/compressed` (CompressedImage, jpeg, when
publish_compressed, while someone subscribes), `camera_info`, and for the scene source `ground_truth/depth` (32FC1 metres,
+inf sky) and `ground_truth/clear` (the haze-free image), published only while someone listens.
Intrinsics: the renderer's exact K for `scene`; a pinhole of `hfov_deg` for folders and videos.

The timer runs at `rate_hz`. Rendering a scene frame costs about 0.15 s at 640x480 here (about
6 frames/s), so a live scene cannot feed the node at a real camera's rate: with `prerender_frames`
N > 0 the scene source renders N frames (clear image and depth, at the camera's own frame times)
once at start-up and plays them back and forth in a loop; only the haze (about 10 ms) is applied
per frame, so the haze still drifts. Otherwise, when making a frame takes longer than the period,
frames go out as fast as they are made and the log says so once.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from dehaze_ros import stop_signal

if __name__ == "__main__":
    # `python -m dehaze_ros.sim.sample_camera`: a signal while the modules below load ends main()
    # at once with status 0. The console script gets the same from dehaze_ros.entry_points.
    stop_signal.install()

# The renderer's matrix products are small: OpenBLAS threads gain nothing there, but they
# busy-wait and took a second core from the dehaze node (measured: 2x CPU, same frame time).
# Must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402 - after the thread setting above
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, QoSHistoryPolicy, QoSDurabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dehaze_ros.image_conversion import numpy_to_compressed, numpy_to_image, rgb8_to_encoding

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


# At most this many pre-rendered frames (about 1.3 GB at 640x480); the demo checks against it too.
MAX_PRERENDER_FRAMES = 600


def _int_range(low: int, high: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=low, to_value=high, step=1)]


# name: (default, description, extra descriptor fields)
CAMERA_PARAMETERS = {
    "source": (
        "scene",
        "scene (built-in renderer), folder (images in `path`) or video (file at `path`).",
        {},
    ),
    "path": ("", "Folder of images or video file for source folder/video.", {}),
    "rate_hz": (
        10.0,
        "Frames per second to publish (at most; rendering may be slower).",
        {"floating_point_range": _float_range(0.1, 240.0)},
    ),
    "width": (
        0,
        "Output width in pixels; 0 = 640 for the scene, the file's own size otherwise.",
        {"integer_range": _int_range(0, 8192)},
    ),
    "height": (
        0,
        "Output height in pixels; 0 = 480 for the scene, the file's own size otherwise.",
        {"integer_range": _int_range(0, 8192)},
    ),
    "frame_id": (
        "camera_optical_frame",
        "header.frame_id of every message (an optical frame, REP-103).",
        {},
    ),
    "encoding": ("rgb8", "Image encoding to publish: rgb8, bgr8 or mono8.", {}),
    "publish_compressed": (
        False,
        "Also publish image/compressed (jpeg) while someone subscribes to it, "
        "as image_transport does.",
        {},
    ),
    "jpeg_quality": (
        90,
        "JPEG quality of image/compressed.",
        {"integer_range": _int_range(1, 100)},
    ),
    "reliability": (
        "best_effort",
        "QoS reliability of the outputs: best_effort (sensor data) or reliable.",
        {},
    ),
    "seed": (
        0,
        "Scene seed: which random scene the camera drives through.",
        {"integer_range": _int_range(0, 2**31 - 1)},
    ),
    "beta_min": (
        0.02,
        "Thinnest haze, scattering coefficient in 1/m (scene source).",
        {"floating_point_range": _float_range(0.0, 5.0)},
    ),
    "beta_max": (
        0.08,
        "Thickest haze in 1/m (scene source).",
        {"floating_point_range": _float_range(0.0, 5.0)},
    ),
    "beta_period_s": (
        30.0,
        "Seconds for the haze to go from thin to thick and back.",
        {"floating_point_range": _float_range(0.1, 3600.0)},
    ),
    "airlight": (
        0.85,
        "Atmospheric light A in [0, 1] (grey haze).",
        {"floating_point_range": _float_range(0.0, 1.0)},
    ),
    "hfov_deg": (
        70.0,
        "Horizontal field of view for the CameraInfo of folder/video sources.",
        {"floating_point_range": _float_range(1.0, 179.0)},
    ),
    "loop": (True, "Start folder/video sources again at their end (else stop publishing).", {}),
    "prerender_frames": (
        0,
        "Scene source: render this many frames at start-up and play them back and "
        "forth at rate_hz (a camera's rate); 0 = render every frame live (about 6 Hz at 640x480).",
        {"integer_range": _int_range(0, MAX_PRERENDER_FRAMES)},
    ),
}


def pinhole_camera_info(width: int, height: int, K: np.ndarray, frame_id: str) -> CameraInfo:
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = int(width), int(height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [float(v) for v in np.asarray(K, dtype=np.float64).reshape(-1)]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    projection = np.zeros((3, 4))
    projection[:, :3] = K
    info.p = [float(v) for v in projection.reshape(-1)]
    return info


def haze_strength(t: float, beta_min: float, beta_max: float, period_s: float) -> float:
    """beta(t): a slow cosine between beta_min (t = 0) and beta_max (t = period / 2)."""
    phase = 0.5 - 0.5 * math.cos(2.0 * math.pi * t / period_s)
    return beta_min + (beta_max - beta_min) * phase


def loop_index(t: float, rate_hz: float, frames: int) -> int:
    """Which of `frames` pre-rendered frames a camera shows at time t: forward, then backward.

    The frames were rendered at times k / rate_hz; playing them back and forth (0 .. N-1 .. 1)
    keeps the motion continuous at the loop's ends, where a plain loop would jump.
    """
    if frames <= 1:
        return 0
    cycle = 2 * frames - 2
    step = int(math.floor(t * rate_hz + 1e-9)) % cycle
    return step if step < frames else cycle - step


class SceneSource:
    """Procedural frames with exact depth, hazed with the ASM (rendered live or pre-rendered)."""

    def __init__(
        self,
        width: int,
        height: int,
        seed: int,
        beta_min: float,
        beta_max: float,
        period_s: float,
        airlight: float,
        prerender_frames: int = 0,
        rate_hz: float = 10.0,
    ):
        from dehaze_ros.sim.scenes import SceneRenderer

        self.renderer = SceneRenderer(width=width or 640, height=height or 480, seed=seed)
        self.K = self.renderer.K
        self.beta = (beta_min, beta_max, period_s)
        self.airlight = airlight
        self.rate_hz = rate_hz
        # Clear image and depth of each pre-rendered frame; the haze is applied per published frame.
        self.loop = [self.renderer.render(k / rate_hz) for k in range(prerender_frames)]

    def frame(self, t: float):
        """(hazy RGB uint8, depth metres, clear RGB uint8) at time t."""
        from dehaze_ros.haze import synthesize_haze

        if self.loop:
            rendered = self.loop[loop_index(t, self.rate_hz, len(self.loop))]
        else:
            rendered = self.renderer.render(t)
        beta = haze_strength(t, *self.beta)
        hazy, _ = synthesize_haze(rendered.rgb, rendered.depth_m, beta, self.airlight)
        return (hazy * 255.0 + 0.5).astype(np.uint8), rendered.depth_m, rendered.rgb


class FileSource:
    """Frames from a folder of images or a video file, converted to RGB."""

    def __init__(self, kind: str, path: str, width: int, height: int, hfov_deg: float, loop: bool):
        self.kind, self.loop = kind, loop
        self.size = (width, height) if width and height else None
        self.index = 0
        target = Path(path).expanduser()
        if kind == "folder":
            if not target.is_dir():
                raise ValueError(f"source folder {target} does not exist or is not a folder")
            self.files = sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {target}")
            first = self._read_file(self.files[0])
        else:
            if not target.is_file():
                raise ValueError(f"video file {target} does not exist")
            self.capture = cv2.VideoCapture(str(target))
            ok, first_bgr = self.capture.read()
            if not ok:
                raise ValueError(f"OpenCV cannot read frames from {target}")
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            first = self._fit(cv2.cvtColor(first_bgr, cv2.COLOR_BGR2RGB))
        height_px, width_px = first.shape[:2]
        from dehaze_ros.sim.scenes import intrinsics

        self.K = intrinsics(width_px, height_px, hfov_deg)

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        if self.size and (rgb.shape[1], rgb.shape[0]) != self.size:
            return cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        return rgb

    def _read_file(self, path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {path}")
        return self._fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def frame(self, t: float):
        """(RGB uint8, None, None) or None at the end of a non-looping source."""
        if self.kind == "folder":
            if self.index >= len(self.files):
                if not self.loop:
                    return None
                self.index = 0
            rgb = self._read_file(self.files[self.index])
            self.index += 1
            return rgb, None, None
        ok, bgr = self.capture.read()
        if not ok and self.loop:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.capture.read()
        if not ok:
            return None
        return self._fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), None, None


class SampleCamera(Node):
    def __init__(self, **kwargs):
        super().__init__("sample_camera", **kwargs)
        for name, (default, description, extra) in CAMERA_PARAMETERS.items():
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=True, **extra)
            )
        value = {name: self.get_parameter(name).value for name in CAMERA_PARAMETERS}
        self.settings = value
        if value["encoding"] not in ("rgb8", "bgr8", "mono8"):
            raise ValueError(f"encoding must be rgb8, bgr8 or mono8, got {value['encoding']!r}")
        if value["reliability"] not in ("best_effort", "reliable"):
            raise ValueError(
                f"reliability must be best_effort or reliable, got {value['reliability']!r}"
            )
        if value["source"] == "scene":
            started = time.monotonic()
            self.source = SceneSource(
                value["width"],
                value["height"],
                value["seed"],
                value["beta_min"],
                value["beta_max"],
                value["beta_period_s"],
                value["airlight"],
                value["prerender_frames"],
                value["rate_hz"],
            )
            if value["prerender_frames"]:
                self.get_logger().info(
                    f"pre-rendered {value['prerender_frames']} scene frames in "
                    f"{time.monotonic() - started:.1f} s: a {value['prerender_frames'] / value['rate_hz']:.1f} s "
                    f"loop played back and forth at {value['rate_hz']:g} Hz"
                )
        elif value["source"] in ("folder", "video"):
            self.source = FileSource(
                value["source"],
                value["path"],
                value["width"],
                value["height"],
                value["hfov_deg"],
                value["loop"],
            )
        else:
            raise ValueError(f"source must be scene, folder or video, got {value['source']!r}")

        qos = QoSProfile(
            history=QoSHistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=(
                QoSReliabilityPolicy.RELIABLE
                if value["reliability"] == "reliable"
                else QoSReliabilityPolicy.BEST_EFFORT
            ),
            durability=QoSDurabilityPolicy.VOLATILE,
        )
        options = QoSOverridingOptions.with_default_policies()
        self.image_pub = self.create_publisher(Image, "image", qos, qos_overriding_options=options)
        self.info_pub = self.create_publisher(
            CameraInfo, "camera_info", qos, qos_overriding_options=options
        )
        self.compressed_pub = None
        if value["publish_compressed"]:
            # image_transport's naming: the compressed stream lives under the (remapped) image topic.
            base = self.resolve_topic_name("image")
            self.compressed_pub = self.create_publisher(
                CompressedImage, f"{base}/compressed", qos, qos_overriding_options=options
            )
        self.depth_pub = self.create_publisher(Image, "ground_truth/depth", qos)
        self.clear_pub = self.create_publisher(Image, "ground_truth/clear", qos)
        self.camera_info = None
        self.started = time.monotonic()
        self.published = 0
        self.warned_slow = False
        self.timer = self.create_timer(1.0 / value["rate_hz"], self.publish_frame)
        self.get_logger().info(
            f"publishing {value['source']} frames on {self.image_pub.topic_name} at up to "
            f"{value['rate_hz']:g} Hz, frame_id {value['frame_id']}"
        )

    def publish_frame(self) -> None:
        t = time.monotonic() - self.started
        tick = time.monotonic()
        frame = self.source.frame(t)
        if frame is None:
            self.get_logger().info(
                "end of the source reached (loop is false): no more frames", once=True
            )
            return
        rgb, depth_m, clear = frame
        encoding = self.settings["encoding"]
        header_stamp = self.get_clock().now().to_msg()
        pixels = rgb8_to_encoding(
            rgb, encoding
        )  # one conversion for the raw and the compressed message
        image_msg = numpy_to_image(pixels, encoding)
        image_msg.header.stamp = header_stamp
        image_msg.header.frame_id = self.settings["frame_id"]
        if self.camera_info is None:
            self.camera_info = pinhole_camera_info(
                rgb.shape[1], rgb.shape[0], self.source.K, self.settings["frame_id"]
            )
        self.camera_info.header = image_msg.header
        self.image_pub.publish(image_msg)
        self.info_pub.publish(self.camera_info)
        # Like image_transport: no JPEG encoding for nobody (the launch file always enables it).
        if self.compressed_pub is not None and self.compressed_pub.get_subscription_count() > 0:
            self.compressed_pub.publish(
                numpy_to_compressed(
                    pixels,
                    encoding,
                    "jpeg",
                    image_msg.header,
                    jpeg_quality=self.settings["jpeg_quality"],
                )
            )
        if depth_m is not None and self.depth_pub.get_subscription_count() > 0:
            self.depth_pub.publish(
                numpy_to_image(depth_m.astype(np.float32), "32FC1", image_msg.header)
            )
        if clear is not None and self.clear_pub.get_subscription_count() > 0:
            self.clear_pub.publish(numpy_to_image(clear, "rgb8", image_msg.header))
        self.published += 1
        spent = time.monotonic() - tick
        if not self.warned_slow and self.published > 3 and spent > 1.0 / self.settings["rate_hz"]:
            self.warned_slow = True
            self.get_logger().warning(
                f"making one {rgb.shape[1]}x{rgb.shape[0]} frame takes {spent * 1e3:.0f} ms: publishing "
                f"at about {1.0 / spent:.1f} Hz instead of {self.settings['rate_hz']:g} Hz"
            )


def main(args=None) -> int:
    node = None
    try:
        # rclpy's handlers stop the camera from here on: they chain to Python's own, whose
        # KeyboardInterrupt also cuts a long pre-rendering short. The start-up guard's (installed
        # while the modules loaded) would only set a flag that nothing here looks at.
        stop_signal.restore_defaults()
        if stop_signal.STOP_REQUESTED.is_set():
            return 0  # a signal while the modules loaded: nothing is set up yet
        rclpy.init(args=args)
        node = SampleCamera()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as exc:
        # A bad parameter (source, path, encoding; a value outside a declared range, which rclpy
        # refuses with its own exception): say so, no traceback.
        print(f"sample_camera: {exc}", file=sys.stderr)
        return 2
    except Exception:
        # Ctrl-C shuts the context down from the signal handler, possibly while a callback is
        # publishing: that error is part of a normal exit. Anything else is a real failure.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
