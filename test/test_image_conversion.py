"""image_conversion on plain message objects (no DDS): cv_bridge semantics, both directions."""

import array
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

sensor_msgs = pytest.importorskip(
    "sensor_msgs.msg", reason="sensor_msgs (ROS message package) missing"
)

from dehaze_ros.image_conversion import (
    CAMERA_ENCODINGS,
    ImageConversionError,  # noqa: E402
    alpha_channel,
    compressed_size,
    compressed_to_numpy,
    encoding_layout,
    image_to_numpy,
    numpy_to_compressed,
    numpy_to_image,
    output_encoding,
    rgb8_to_encoding,
    to_rgb8,
)
from ros_helpers import png_bomb  # noqa: E402

RNG = np.random.default_rng(7)
ROUND_TRIP_ENCODINGS = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "rgb16",
    "bgr16",
    "rgba16",
    "bgra16",
    "mono8",
    "mono16",
    "bayer_rggb8",
    "bayer_grbg16",
    "8UC1",
    "8UC3",
    "8SC2",
    "16UC1",
    "16SC3",
    "32SC1",
    "32FC1",
    "32FC3",
    "64FC1",
    "64FC4",
]


def random_image(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    dtype, channels = encoding_layout(encoding)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype.kind == "f":
        return RNG.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def raw_message(encoding, height, width, step, payload: bytes, big_endian=False):
    msg = sensor_msgs.Image()
    msg.encoding, msg.height, msg.width, msg.step = encoding, height, width, step
    msg.is_bigendian = int(big_endian)
    data = array.array("B")
    data.frombytes(payload)
    msg.data = data
    return msg


@pytest.mark.parametrize("encoding", ROUND_TRIP_ENCODINGS)
def test_every_encoding_round_trips_exactly(encoding):
    image = random_image(encoding)
    msg = numpy_to_image(image, encoding)
    dtype, channels = encoding_layout(encoding)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * channels * dtype.itemsize
    assert len(msg.data) == msg.step * msg.height
    assert msg.is_bigendian == (sys.byteorder == "big" and dtype.itemsize > 1)
    back = image_to_numpy(msg)
    assert back.dtype == image.dtype and back.shape == image.shape
    np.testing.assert_array_equal(back, image)


def test_tightly_packed_input_is_a_view_not_a_copy():
    msg = numpy_to_image(random_image("rgb8"), "rgb8")
    view = image_to_numpy(msg)
    view[0, 0, 0] ^= 0xFF  # writing through the view changes the message: shared memory
    assert msg.data[0] == view[0, 0, 0]


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "mono16", "bgra16", "32FC1"])
def test_step_padding_is_skipped(encoding):
    image = random_image(encoding, height=4, width=3)
    dtype, channels = encoding_layout(encoding)
    row_bytes = 3 * channels * dtype.itemsize
    step = row_bytes + 5  # odd padding: rows are not even aligned to the pixel size
    padded = b"".join(image[row].tobytes() + b"\xab" * 5 for row in range(4))
    msg = raw_message(encoding, 4, 3, step, padded)
    back = image_to_numpy(msg)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(
        to_rgb8(back, encoding) if encoding in CAMERA_ENCODINGS else back,
        to_rgb8(image, encoding) if encoding in CAMERA_ENCODINGS else image,
    )


def test_big_endian_mono16_is_byte_swapped():
    values = np.array([[1, 256, 0x1234], [0xFFFF, 0, 0x8001]], dtype=np.uint16)
    msg = raw_message("mono16", 2, 3, 6, values.astype(">u2").tobytes(), big_endian=True)
    back = image_to_numpy(msg)
    assert back.dtype == np.uint16 and back.dtype.isnative
    np.testing.assert_array_equal(back, values)
    # The same bytes read as little-endian would be different numbers: the flag matters.
    msg.is_bigendian = 0
    assert not np.array_equal(image_to_numpy(msg), values)


def test_big_endian_with_padding_and_float():
    values = np.array([[1.5, -2.0], [np.nan, 1e6]], dtype=np.float32)
    payload = b"".join(values[row].astype(">f4").tobytes() + b"\x00\x00\x00" for row in range(2))
    back = image_to_numpy(raw_message("32FC1", 2, 2, 11, payload, big_endian=True))
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda: raw_message("rgb8", 2, 2, 6, bytes(11)), "data has 11 bytes but height*step"),
        (lambda: raw_message("rgb8", 2, 2, 6, bytes(13)), "data has 13 bytes"),
        (lambda: raw_message("rgb8", 2, 2, 5, bytes(10)), "step 5 is smaller than one row"),
        (lambda: raw_message("yuv422", 2, 2, 4, bytes(8)), "unsupported image encoding 'yuv422'"),
        (lambda: raw_message("rgb8", 0, 2, 6, b""), "image is empty"),
        (lambda: raw_message("mono8", 3, 0, 0, b""), "image is empty"),
    ],
)
def test_bad_messages_raise_a_clear_error(make, problem):
    with pytest.raises(ImageConversionError, match=re.escape(problem)):
        image_to_numpy(make())


def test_numpy_to_image_rejects_mismatched_arrays():
    with pytest.raises(ImageConversionError, match="does not fit encoding 'rgb8'"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="does not fit encoding 'mono16'"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "mono16")


def test_to_rgb8_channel_orders_and_bit_depths():
    rgb = random_image("rgb8")
    np.testing.assert_array_equal(to_rgb8(rgb, "rgb8"), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb[..., ::-1].copy(), "bgr8"), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])
    np.testing.assert_array_equal(to_rgb8(rgba, "rgba8"), rgb)
    np.testing.assert_array_equal(to_rgb8(rgba[..., [2, 1, 0, 3]].copy(), "bgra8"), rgb)
    rgb16 = rgb.astype(np.uint16) * 257  # 8-bit value v as 16-bit v*257: top byte is v
    np.testing.assert_array_equal(to_rgb8(rgb16, "rgb16"), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb16[..., ::-1].copy(), "bgr16"), rgb)
    gray = rgb[..., 0]
    for encoding, image in (
        ("mono8", gray),
        ("mono16", gray.astype(np.uint16) << 8),
        ("8UC1", gray),
    ):
        out = to_rgb8(image, encoding)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[..., 1], gray)


@pytest.mark.parametrize("pattern, origin_colour", [("rggb", 0), ("bggr", 2)])
def test_bayer_demosaics_to_the_right_colour(pattern, origin_colour):
    # A uniformly coloured scene seen through the mosaic: the origin pixel's filter colour only.
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200  # the top-left cell of every 2x2 block: R for rggb, B for bggr
    rgb = to_rgb8(mosaic, f"bayer_{pattern}8")
    centre = rgb[2:6, 2:6].reshape(-1, 3).mean(axis=0)
    assert centre.argmax() == origin_colour
    assert centre[origin_colour] > 150 and centre[1] < 30


def test_to_rgb8_rejects_non_camera_encodings():
    with pytest.raises(ImageConversionError, match="not a camera image"):
        to_rgb8(np.zeros((2, 2), np.float32), "32FC1")
    with pytest.raises(ImageConversionError, match="not a camera image"):
        to_rgb8(np.zeros((2, 2, 3), np.uint8), "8UC3")  # colour order unknown


def test_output_encoding_keeps_8bit_colour_and_mono8():
    for encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"):
        assert output_encoding(encoding) == encoding
    assert output_encoding("mono16") == "mono8"
    assert output_encoding("bgr16") == "bgr8"
    assert output_encoding("rgba16") == "rgba8"
    assert output_encoding("bayer_rggb8") == "rgb8"


def test_rgb8_to_encoding_and_alpha_pass_through():
    rgb = random_image("rgb8")
    alpha = random_image("mono8")
    np.testing.assert_array_equal(rgb8_to_encoding(rgb, "bgr8"), rgb[..., ::-1])
    bgra = rgb8_to_encoding(rgb, "bgra8", alpha)
    np.testing.assert_array_equal(bgra[..., :3], rgb[..., ::-1])
    np.testing.assert_array_equal(bgra[..., 3], alpha)
    assert rgb8_to_encoding(rgb, "rgba8")[..., 3].min() == 255  # opaque without an alpha plane
    gray = rgb8_to_encoding(rgb, "mono8")
    np.testing.assert_array_equal(gray, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    rgba16 = np.dstack([rgb.astype(np.uint16) << 8, alpha.astype(np.uint16) << 8])
    np.testing.assert_array_equal(alpha_channel(rgba16, "rgba16"), alpha)
    assert alpha_channel(rgb, "rgb8") is None


def smooth_image(height=48, width=64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 4 % 256, y * 5 % 256, (x + y) * 2 % 256]).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_jpeg_round_trip_keeps_channel_order(encoding):
    rgb = smooth_image()
    image = rgb8_to_encoding(rgb, encoding)
    msg = numpy_to_compressed(image, encoding, "jpeg", jpeg_quality=95)
    assert msg.format.startswith(f"{encoding}; jpeg compressed")
    decoded, decoded_encoding = compressed_to_numpy(msg)
    expected_encoding = {"rgb8": "rgb8", "bgr8": "bgr8", "mono8": "mono8"}[encoding]
    assert decoded_encoding == expected_encoding
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 4  # lossy, but same layout


def test_png_is_lossless_including_16_bit_and_alpha():
    for encoding in ("mono16", "bgra8", "rgba8", "rgb8"):
        image = random_image(encoding, 6, 9)
        decoded, decoded_encoding = compressed_to_numpy(numpy_to_compressed(image, encoding, "png"))
        assert decoded_encoding == encoding
        np.testing.assert_array_equal(decoded, image)


def test_plain_format_strings_decode_as_bgr():
    ok, encoded = cv2.imencode(".jpg", smooth_image())
    msg = sensor_msgs.CompressedImage(format="jpeg")
    msg.data = array.array("B", encoded.tobytes())
    decoded, encoding = compressed_to_numpy(msg)
    assert encoding == "bgr8" and decoded.shape == (48, 64, 3)


@pytest.mark.parametrize(
    "fmt, payload, problem",
    [
        ("jpeg", b"", "compressed image is empty"),
        ("jpeg", b"\xff\xd8 definitely not a jpeg \xff\xd9", "could not decode"),
        ("png", b"\x89PNG\r\n\x1a\n garbage", "could not decode"),
        ("16UC1; compressedDepth", b"\x00" * 20, "compressedDepth"),
        ("tiff", b"\x00" * 20, "unsupported compressed format"),
    ],
)
def test_corrupt_compressed_images_raise(fmt, payload, problem):
    msg = sensor_msgs.CompressedImage(format=fmt)
    msg.data = array.array("B", payload)
    with pytest.raises(ImageConversionError, match=problem):
        compressed_to_numpy(msg)


def test_truncated_jpeg_is_rejected_not_grey_padded():
    msg = numpy_to_compressed(smooth_image(), "rgb8", "jpeg")
    msg.data = msg.data[: len(msg.data) // 2]
    with pytest.raises(ImageConversionError, match="truncated"):
        compressed_to_numpy(msg)


def test_truncated_jpeg_ending_in_an_end_of_image_marker_is_rejected():
    # The hostile case of issue 10: a third of the stream plus FF D9. libjpeg pads the missing
    # two thirds with grey and only says so on stderr; OpenCV returns the padded image.
    msg = numpy_to_compressed(smooth_image(480, 640), "rgb8", "jpeg")
    msg.data = bytes(msg.data[: len(msg.data) // 3]) + b"\xff\xd9"
    assert cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED).shape == (
        480,
        640,
        3,
    )
    with pytest.raises(
        ImageConversionError, match="JPEG data is truncated or corrupt .*premature end"
    ):
        compressed_to_numpy(msg)
    # A whole stream with junk between the last scan and EOI is complete: still decoded.
    whole = numpy_to_compressed(smooth_image(480, 640), "rgb8", "jpeg")
    whole.data = bytes(whole.data[:-2]) + b"\x00" * 8 + b"\xff\xd9"
    assert compressed_to_numpy(whole)[0].shape == (480, 640, 3)


def test_jpeg_damage_check_passes_other_stderr_output_through(capfd):
    # While libjpeg's messages are collected, fd 2 is a temporary file: whatever else is
    # written there (another thread's log line) must reach the real stderr afterwards.
    from dehaze_ros.image_conversion import _JPEG_DAMAGE, _STDERR

    def decoder_and_another_thread():
        os.write(2, b"[INFO] another thread's log line\n")
        os.write(2, b"Corrupt JPEG data: premature end of data segment\n")
        return "decoded"

    result, damage = _STDERR.run(_JPEG_DAMAGE, decoder_and_another_thread)
    assert result == "decoded" and damage == ["Corrupt JPEG data: premature end of data segment"]
    assert capfd.readouterr().err == "[INFO] another thread's log line\n"


def compressed(payload: bytes, fmt: str = "png"):
    msg = sensor_msgs.CompressedImage(format=fmt)
    msg.data = array.array("B", payload)
    return msg


def test_sizes_come_from_the_png_and_jpeg_headers():
    image = smooth_image(37, 53)
    assert compressed_size(numpy_to_compressed(image, "rgb8", "png").data) == ("png", 53, 37)
    assert compressed_size(numpy_to_compressed(image, "rgb8", "jpeg").data) == ("jpeg", 53, 37)
    ok, progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])  # SOF2
    assert compressed_size(progressive.tobytes()) == ("jpeg", 53, 37)
    # Segments before the frame header (an EXIF-sized APP1 with an FF C0 inside it) are skipped
    # by their lengths, not searched for a marker.
    baseline = numpy_to_compressed(image, "rgb8", "jpeg").data
    decoy = b"\xff\xc0\x00\x11\x08\x75\x30\x75\x30" * 50
    app1 = b"\xff\xe1" + struct.pack(">H", len(decoy) + 2) + decoy
    assert compressed_size(bytes(baseline[:2]) + app1 + bytes(baseline[2:])) == ("jpeg", 53, 37)
    for payload, problem in [
        (b"BM" + b"\x00" * 60, "neither PNG nor JPEG"),
        (b"\x89PNG\r\n\x1a\n", "no IHDR"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "no frame header"),
        (b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 8, "scan data before the frame header"),
    ]:
        with pytest.raises(ImageConversionError, match=problem):
            compressed_size(payload)


def test_decompression_bomb_is_refused_before_anything_is_decoded():
    small_bomb = compressed(png_bomb(3000, 2000))  # the same construction, decodable here
    decoded, encoding = compressed_to_numpy(small_bomb, max_pixels=None)
    assert decoded.shape == (2000, 3000) and encoding == "mono8"  # a real PNG of that size
    with pytest.raises(
        ImageConversionError, match=r"3000x2000 = 6\.0 MP, over the limit of 1000000"
    ):
        compressed_to_numpy(small_bomb, max_pixels=1_000_000)

    # Issue 10's bomb: 109 KB that decode to 900 MP (858 MB as mono8, 2.5 GB as rgb8). In a
    # fresh process (its peak memory is its own), refused with the default limit, and the
    # process never grows anywhere near one decoded copy.
    script = textwrap.dedent("""
        import array, sys
        sys.path[:0] = [sys.argv[1], sys.argv[2]]
        import sensor_msgs.msg
        from ros_helpers import png_bomb
        from dehaze_ros.image_conversion import ImageConversionError, compressed_to_numpy
        msg = sensor_msgs.msg.CompressedImage(format="png")
        msg.data = array.array("B", png_bomb(30000, 30000))
        try:
            compressed_to_numpy(msg)
            print("DECODED")
        except ImageConversionError as exc:
            print("REFUSED", len(msg.data), exc)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest, with
        # torch loaded) across fork and exec, VmHWM belongs to this process image alone.
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print("PEAK_MB", int(hwm.split()[1]) / 1024)
    """)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script, str(root), str(root / "test")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    refused, peak = result.stdout.splitlines()
    assert refused.startswith("REFUSED 1094") and "30000x30000 = 900.0 MP" in refused, refused
    assert "over the limit of 16777216 pixels" in refused
    assert float(peak.split()[1]) < 400, peak  # one decoded copy alone would be 858 MB


def test_raw_frames_over_the_pixel_limit_are_refused_before_any_copy():
    fits = raw_message("rgb8", 100, 100, 300, bytes(100 * 300))
    assert image_to_numpy(fits, max_pixels=100 * 100).shape == (100, 100, 3)  # at the limit: fine
    with pytest.raises(
        ImageConversionError, match=r"rgb8 image is 100x100 .* over the limit of 9999"
    ):
        image_to_numpy(fits, max_pixels=9999)
    # A header that claims a huge frame is refused on its dimensions, whatever the data holds.
    claims = raw_message("mono8", 30000, 30000, 30000, b"\x00" * 64)
    with pytest.raises(
        ImageConversionError, match="30000x30000 = 900.0 MP, over the limit of 16777216"
    ):
        image_to_numpy(claims)
