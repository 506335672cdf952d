"""sensor_msgs/Image and CompressedImage <-> numpy, with cv_bridge's encoding semantics.

cv_bridge is not available everywhere this package runs (PyPI ROS wheels, CI), and its Python
port crashes on numpy 2, so the node uses this module instead. The behaviour follows cv_bridge:

* ``image_to_numpy(msg)`` is ``imgmsg_to_cv2(msg, "passthrough")``: H x W for one channel,
  H x W x C otherwise, dtype from the encoding, native byte order. The array is a view of
  ``msg.data`` when the layout allows (native byte order), padding included: a ``step`` larger
  than ``width * pixel size`` gives a strided view, not a copy. Big-endian data is byte-swapped
  into a copy.
* ``numpy_to_image(array, encoding)`` is ``cv2_to_imgmsg``: a tightly packed, native-endian
  message (one copy, into ``msg.data``).
* ``compressed_to_numpy`` / ``numpy_to_compressed`` follow image_transport's compressed plugin:
  OpenCV codecs, BGR channel order inside the codec, the ``format`` string
  ``"<encoding>; jpeg compressed bgr8"`` (plain ``"jpeg"`` / ``"png"`` accepted too).

``to_rgb8`` and ``rgb8_to_encoding`` map camera encodings to the engine's RGB uint8 frames and
back. Bad data raises ``ImageConversionError`` (a ``ValueError``) that says what is wrong.

Memory stays bounded whatever arrives: ``image_to_numpy`` and ``compressed_to_numpy`` refuse a
frame of more than ``max_pixels`` pixels before allocating anything for it. For compressed data
the size comes from the PNG IHDR chunk or the JPEG SOFn marker, parsed here (``compressed_size``),
because a 100 KB PNG can declare 30000 x 30000 pixels and the codec would allocate all of them.

No rclpy import: everything here works on plain message objects, so it is tested without DDS.
"""

from __future__ import annotations

import array
import os
import re
import struct
import sys
import tempfile
import threading

import cv2
import numpy as np


class ImageConversionError(ValueError):
    """A message cannot be turned into an image (or back): the text names the problem."""


#: Frames with more pixels than this are refused unless the caller says otherwise: 4096 x 4096.
#: The node passes its ``max_input_pixels`` parameter (same default).
DEFAULT_MAX_PIXELS = 4096 * 4096


# Named encodings of sensor_msgs/image_encodings.hpp: (numpy dtype, channels).
_NAMED_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgb16": (np.dtype(np.uint16), 3),
    "bgr16": (np.dtype(np.uint16), 3),
    "rgba16": (np.dtype(np.uint16), 4),
    "bgra16": (np.dtype(np.uint16), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
}
for _pattern in ("rggb", "bggr", "gbrg", "grbg"):
    _NAMED_ENCODINGS[f"bayer_{_pattern}8"] = (np.dtype(np.uint8), 1)
    _NAMED_ENCODINGS[f"bayer_{_pattern}16"] = (np.dtype(np.uint16), 1)

# Generic OpenCV-style encodings: 8UC3, 32FC1, 16SC2, ...
_GENERIC_DEPTHS = {
    "8U": np.uint8,
    "8S": np.int8,
    "16U": np.uint16,
    "16S": np.int16,
    "32S": np.int32,
    "32F": np.float32,
    "64F": np.float64,
}
_GENERIC_ENCODING = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")

# cv_bridge's demosaicing codes. OpenCV names a Bayer pattern after the 2x2 block that starts at
# the second row and column, ROS after the one at the origin: ROS "rggb" is OpenCV "BG".
_BAYER_TO_RGB = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}

#: Encodings ``to_rgb8`` accepts as camera input.
CAMERA_ENCODINGS = tuple(name for name in _NAMED_ENCODINGS) + ("8UC1", "16UC1")


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(dtype, channels) of an encoding; ImageConversionError for one cv_bridge does not know."""
    if encoding in _NAMED_ENCODINGS:
        return _NAMED_ENCODINGS[encoding]
    match = _GENERIC_ENCODING.match(encoding)
    if match:
        return np.dtype(_GENERIC_DEPTHS[match.group(1)]), int(match.group(2))
    raise ImageConversionError(
        f"unsupported image encoding {encoding!r}; supported: {', '.join(_NAMED_ENCODINGS)} "
        "and the generic {8U,8S,16U,16S,32S,32F,64F}C{1..4}"
    )


def _buffer_of(data) -> memoryview:
    """The raw bytes of a message's ``data`` field without copying (array.array, bytes, list)."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return memoryview(data).cast("B")
    # A message filled from a Python list (the setter usually turns it into array.array already).
    return memoryview(np.asarray(data, dtype=np.uint8)).cast("B")


def check_pixel_limit(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """ImageConversionError when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageConversionError(
            f"{what} is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
            f"{max_pixels} pixels (parameter max_input_pixels); refused before decoding"
        )


def image_to_numpy(msg, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> numpy array, as cv_bridge's ``imgmsg_to_cv2(msg, "passthrough")``.

    Frames of more than ``max_pixels`` pixels are refused (None: no limit): the array is a view,
    but every later step (colour conversion, the engine) copies it.
    """
    dtype, channels = encoding_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"image is empty ({width}x{height}, encoding {msg.encoding})")
    check_pixel_limit(width, height, max_pixels, f"{msg.encoding} image")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than one row of {width} {msg.encoding} pixels ({row_bytes} bytes)"
        )
    buffer = _buffer_of(msg.data)
    if len(buffer) != height * step:
        raise ImageConversionError(
            f"data has {len(buffer)} bytes but height*step = {height}*{step} = {height * step} "
            f"({msg.encoding}, {width}x{height})"
        )
    message_big_endian = bool(msg.is_bigendian)
    native_big_endian = sys.byteorder == "big"
    stored_dtype = (
        dtype.newbyteorder(">" if message_big_endian else "<") if dtype.itemsize > 1 else dtype
    )
    shape = (height, width, channels) if channels > 1 else (height, width)
    strides = (
        (step, channels * dtype.itemsize, dtype.itemsize)
        if channels > 1
        else (step, dtype.itemsize)
    )
    # A strided view honours row padding without copying; numpy handles unaligned rows too.
    image = np.ndarray(shape=shape, dtype=stored_dtype, buffer=buffer, strides=strides)
    if dtype.itemsize > 1 and message_big_endian != native_big_endian:
        image = image.astype(dtype)  # byte swap into native order: a copy, as cv_bridge does
    return image


def numpy_to_image(image: np.ndarray, encoding: str, header=None):
    """numpy array -> sensor_msgs/Image (tightly packed, native byte order), as ``cv2_to_imgmsg``."""
    from sensor_msgs.msg import Image

    dtype, channels = encoding_layout(encoding)
    image = np.asarray(image)
    actual_channels = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else -1)
    if image.dtype != dtype or actual_channels != channels:
        raise ImageConversionError(
            f"array of shape {image.shape} and dtype {image.dtype} does not fit encoding {encoding!r} "
            f"({channels} channel(s) of {dtype})"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageConversionError(f"image is empty: shape {image.shape}")
    image = np.ascontiguousarray(image)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 1 if (sys.byteorder == "big" and dtype.itemsize > 1) else 0
    msg.step = int(image.shape[1] * channels * dtype.itemsize)
    # Filling an array.array directly keeps the generated setter on its fast path (on Humble the
    # other path checks every byte in Python: ~0.1 s for one VGA frame).
    data = array.array("B")
    data.frombytes(memoryview(image).cast("B"))
    msg.data = data
    return msg


def _parse_compressed_format(fmt: str) -> tuple[str, str]:
    """image_transport format string -> (original encoding or "", codec "jpeg" | "png")."""
    text = fmt.strip().lower()
    if "compresseddepth" in text:
        raise ImageConversionError(
            f"format {fmt!r} is compressedDepth (a depth image), not a camera image"
        )
    original = ""
    if ";" in text:
        original, _, rest = (part.strip() for part in text.partition(";"))
        text = rest
    if "jpeg" in text or "jpg" in text:
        codec = "jpeg"
    elif "png" in text:
        codec = "png"
    elif text == "":
        codec = ""  # unknown: the bytes say (compressed_size)
    else:
        raise ImageConversionError(f"unsupported compressed format {fmt!r} (need jpeg or png)")
    # The encoding names keep their case (e.g. "8UC3"): take it from the original string.
    if original:
        original = fmt.split(";", 1)[0].strip()
    return original, codec


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (ITU T.81 B.1.1.3): C0-C3, C5-C7, C9-CB, CD-CF. C4 (DHT), C8 (JPG) and
# CC (DAC) share the range but are not frame headers.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8), 0xD8, 0xD9])


def compressed_size(data) -> tuple[str, int, int]:
    """(codec, width, height) from the header of PNG or JPEG bytes, without decoding anything.

    PNG: the IHDR chunk, which the format requires first. JPEG: the first SOFn marker, reached
    by walking the marker segments from SOI by their lengths. Anything else, or a header that
    is cut short or malformed, raises ImageConversionError: data whose size is unknown is never
    handed to a decoder.
    """
    head = bytes(data[:8])
    if head == _PNG_SIGNATURE:
        ihdr = bytes(data[8 : 8 + 8 + 13])
        if len(ihdr) < 21 or ihdr[4:8] != b"IHDR":
            raise ImageConversionError(
                "could not decode PNG data: no IHDR chunk after the signature"
            )
        width, height = struct.unpack(">II", ihdr[8:16])
        if width == 0 or height == 0:
            raise ImageConversionError(f"could not decode PNG data: IHDR says {width}x{height}")
        return "png", width, height
    if head[:2] == b"\xff\xd8":
        return ("jpeg", *_jpeg_frame_size(data))
    raise ImageConversionError(
        f"could not decode {len(data)} bytes: neither PNG nor JPEG (starts with {head[:4].hex(' ')})"
    )


def _jpeg_frame_size(data) -> tuple[int, int]:
    view = memoryview(data).cast("B")
    position, end = 2, len(view)
    while position < end:
        if view[position] != 0xFF:
            raise ImageConversionError(
                f"could not decode JPEG data: expected a marker at byte {position}, found "
                f"0x{view[position]:02x} (corrupt header)"
            )
        while position < end and view[position] == 0xFF:  # fill bytes before a marker
            position += 1
        if position >= end:
            break
        marker = view[position]
        position += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            if marker == 0xD9:
                break
            continue
        if position + 2 > end:
            break
        length = (view[position] << 8) | view[position + 1]
        if length < 2:
            raise ImageConversionError(
                f"could not decode JPEG data: marker 0x{marker:02x} has length {length}"
            )
        if marker in _JPEG_SOF_MARKERS:
            if position + 7 > end:
                break
            height = (view[position + 3] << 8) | view[position + 4]
            width = (view[position + 5] << 8) | view[position + 6]
            if width == 0 or height == 0:
                # Height 0 defers it to a DNL marker, which libjpeg does not support either.
                raise ImageConversionError(
                    f"could not decode JPEG data: frame header says {width}x{height}"
                )
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            raise ImageConversionError(
                "could not decode JPEG data: scan data before the frame header (SOF)"
            )
        position += length
    raise ImageConversionError(
        f"could not decode {len(view)} bytes of JPEG data: no frame header (SOF marker) in them: "
        "corrupt or truncated data"
    )


class _StderrCapture:
    """Lines that C libraries write to file descriptor 2 while a call runs, picked out.

    libjpeg reports damage it has papered over (a scan that ends early, a bad Huffman code) only
    as a warning on stderr, and OpenCV returns the grey-padded image as if nothing happened.
    Pointing fd 2 at a temporary file for the length of one decode is the only way to see that
    warning through OpenCV. Lines that are not asked for (another thread's log line written
    meanwhile, OpenCV's own warnings) go on to the real stderr afterwards. One capture at a
    time (a lock): fd 2 belongs to the whole process.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._file = None

    def run(self, wanted: re.Pattern, function, *args):
        """(function(*args), the lines matching ``wanted`` that were written to fd 2 meanwhile)."""
        with self._lock:
            try:
                if self._file is None:
                    self._file = tempfile.TemporaryFile()
                saved = os.dup(2)
            except OSError:  # no stderr at all (closed fd 2): call without looking
                return function(*args), []
            capture = self._file.fileno()
            os.ftruncate(capture, 0)
            os.lseek(capture, 0, os.SEEK_SET)
            sys.stderr.flush()
            os.dup2(capture, 2)
            try:
                result = function(*args)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.lseek(capture, 0, os.SEEK_SET)
                lines = os.read(capture, 1 << 20).decode(errors="replace").splitlines(keepends=True)
                others = "".join(line for line in lines if not wanted.match(line))
                if others:
                    os.write(2, others.encode())
        return result, [line.rstrip("\n") for line in lines if wanted.match(line)]


_STDERR = _StderrCapture()
# libjpeg's warnings (jerror.h) that mean image data is missing or wrong. "extraneous bytes before
# marker" is not among them: it comes after the last block was decoded, so the image is whole.
_JPEG_DAMAGE = re.compile(
    r"(Corrupt JPEG data: (?!\d+ extraneous bytes)|Premature end of JPEG file"
    r"|Inconsistent progression sequence)"
)


def _decode_jpeg_checked(encoded: np.ndarray) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode of JPEG bytes, and libjpeg's first damage warning ("" when none)."""
    decoded, damage = _STDERR.run(_JPEG_DAMAGE, cv2.imdecode, encoded, cv2.IMREAD_UNCHANGED)
    return decoded, damage[0] if damage else ""


def frame_size(msg) -> tuple[str, int, int]:
    """(what, width, height) of a sensor_msgs/Image or CompressedImage from its fields or the
    codec's header: cheap, nothing decoded. ``what`` names it for messages ("PNG image",
    "bgr8 image"). ImageConversionError when the size cannot be known."""
    if hasattr(msg, "format"):  # CompressedImage
        codec, width, height = compressed_size(_buffer_of(msg.data))
        return f"{codec.upper()} image", width, height
    return f"{msg.encoding} image", int(msg.width), int(msg.height)


def compressed_to_numpy(msg, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """sensor_msgs/CompressedImage -> (array, encoding), decoded with OpenCV.

    The encoding is the one the image had before compression when ``format`` says so
    (``"rgb8; jpeg compressed bgr8"`` -> RGB order), else what the codec holds: ``bgr8``,
    ``bgra8``, ``mono8`` or their 16-bit forms for PNG.

    Only PNG and JPEG are decoded, and only after their header says the image has at most
    ``max_pixels`` pixels (None: no limit). A JPEG that libjpeg had to pad (truncated or corrupt
    entropy-coded data) is refused, not returned grey-filled.
    """
    original, codec = _parse_compressed_format(msg.format)
    buffer = _buffer_of(msg.data)
    if len(buffer) == 0:
        raise ImageConversionError(f"compressed image is empty (format {msg.format!r}, 0 bytes)")
    # The bytes decide the codec (OpenCV sniffs them too); the format string only names the
    # original encoding.
    codec, width, height = compressed_size(buffer)
    check_pixel_limit(width, height, max_pixels, f"{codec.upper()} image")
    encoded = np.frombuffer(buffer, dtype=np.uint8)
    damage = ""
    if codec == "jpeg":
        # Cheap first: a stream without its end-of-image marker (FF D9) was cut short.
        tail = bytes(buffer[-16:]).rstrip(b"\x00")
        if not tail.endswith(b"\xff\xd9"):
            raise ImageConversionError(
                f"JPEG data is truncated or corrupt ({len(buffer)} bytes, no end-of-image marker)"
            )
        decoded, damage = _decode_jpeg_checked(encoded)
    else:
        decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageConversionError(
            f"could not decode {len(buffer)} bytes as {codec} (format {msg.format!r}): "
            "corrupt or truncated data"
        )
    if damage:
        raise ImageConversionError(
            f"JPEG data is truncated or corrupt ({len(buffer)} bytes; libjpeg: {damage!r}): the "
            "decoder filled the missing part with grey"
        )
    bits = 16 if decoded.dtype == np.uint16 else 8
    if decoded.dtype not in (np.uint8, np.uint16):
        raise ImageConversionError(f"decoded image has unsupported dtype {decoded.dtype}")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    decoded_encoding = {1: f"mono{bits}", 3: f"bgr{bits}", 4: f"bgra{bits}"}.get(channels)
    if decoded_encoding is None:
        raise ImageConversionError(f"decoded image has {channels} channels")
    if original in ("rgb8", "rgb16") and channels == 3:
        return np.ascontiguousarray(decoded[..., ::-1]), f"rgb{bits}"
    if original in ("rgba8", "rgba16") and channels == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), f"rgba{bits}"
    return decoded, decoded_encoding


def numpy_to_compressed(
    image: np.ndarray, encoding: str, fmt: str = "jpeg", header=None, jpeg_quality: int = 90
):
    """numpy array in ``encoding`` -> sensor_msgs/CompressedImage (image_transport's layout)."""
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"compressed format must be jpeg or png, got {fmt!r}")
    if encoding not in _NAMED_ENCODINGS or encoding.startswith("bayer_"):
        raise ImageConversionError(
            f"compression needs an rgb/bgr/rgba/bgra/mono encoding, got {encoding!r}"
        )
    dtype, channels = encoding_layout(encoding)
    image = np.asarray(image)
    if image.dtype != dtype:
        raise ImageConversionError(f"array dtype {image.dtype} does not fit encoding {encoding!r}")
    if encoding.startswith("rgba"):
        codec_image, codec_encoding = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA), "bgra"
    elif encoding.startswith("rgb"):
        codec_image, codec_encoding = image[..., ::-1], "bgr"
    elif channels == 1:
        codec_image, codec_encoding = image, "mono"
    else:
        codec_image, codec_encoding = image, encoding.rstrip("0123456789")
    if fmt == "jpeg" and (dtype != np.uint8 or channels == 4):
        raise ImageConversionError(f"JPEG holds 8-bit mono or colour only, not {encoding}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(
        ".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(codec_image), params
    )
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {encoding} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"{encoding}; {fmt} compressed {codec_encoding}{dtype.itemsize * 8}"
    data = array.array("B")
    data.frombytes(encoded.tobytes())
    msg.data = data
    return msg


def _top_byte(image: np.ndarray) -> np.ndarray:
    """16-bit -> 8-bit keeping the most significant byte (cv_bridge scales by 1/256 the same way)."""
    return (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """A camera frame in ``encoding`` -> H x W x 3 uint8 RGB for the engine."""
    if encoding not in CAMERA_ENCODINGS:
        raise ImageConversionError(
            f"encoding {encoding!r} is not a camera image the node can dehaze; use one of "
            f"{', '.join(CAMERA_ENCODINGS)}"
        )
    dtype, channels = encoding_layout(encoding)
    actual_channels = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype != dtype or actual_channels != channels:
        raise ImageConversionError(
            f"array {image.shape} {image.dtype} does not match encoding {encoding!r}"
        )
    if encoding.startswith("bayer_"):
        pattern = encoding[len("bayer_") :].rstrip("0123456789")
        return cv2.cvtColor(np.ascontiguousarray(_top_byte(image)), _BAYER_TO_RGB[pattern])
    image8 = _top_byte(image)
    if channels == 1:
        return np.repeat(image8[..., None], 3, axis=2)
    if encoding.startswith("rgb"):
        return np.ascontiguousarray(image8[..., :3])
    return np.ascontiguousarray(image8[..., 2::-1])  # bgr / bgra: reverse the colour channels


def output_encoding(input_encoding: str) -> str:
    """The encoding of the dehazed output for a given input encoding.

    8-bit colour and mono8 keep their encoding. The dehazed image holds 8 bits per channel, so
    16-bit inputs map to their 8-bit form (mono16 -> mono8, bgr16 -> bgr8) rather than pretend to
    a precision the network does not produce; Bayer and 8UC1/16UC1 map to rgb8 / mono8.
    """
    if input_encoding.startswith("bayer_"):
        return "rgb8"
    if input_encoding in ("8UC1", "16UC1", "mono16"):
        return "mono8"
    return input_encoding.replace("16", "8")


def rgb8_to_encoding(rgb: np.ndarray, encoding: str, alpha: np.ndarray | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB -> array in ``encoding`` (rgb8, bgr8, rgba8, bgra8 or mono8).

    ``alpha`` (H x W uint8) fills the alpha channel of rgba8/bgra8, so transparency passes
    through dehazing unchanged; opaque when None.
    """
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == "mono8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding in ("rgba8", "bgra8"):
        if alpha is None:
            alpha = np.full(rgb.shape[:2], 255, dtype=np.uint8)
        colour = rgb if encoding == "rgba8" else rgb[..., ::-1]
        return np.dstack([colour, alpha])
    raise ImageConversionError(
        f"cannot produce {encoding!r} from RGB (rgb8, bgr8, rgba8, bgra8, mono8)"
    )


def alpha_channel(image: np.ndarray, encoding: str) -> np.ndarray | None:
    """The alpha plane of an rgba/bgra frame as uint8, else None."""
    if encoding.startswith(("rgba", "bgra")):
        return _top_byte(image[..., 3])
    return None
