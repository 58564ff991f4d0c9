"""Image reading and writing: every file comes back as float32 (H, W, C); every bad file is one ``InputError``.

Reading covers what users hand to an inverse renderer: 8- and 16-bit PNG/TIFF, JPEG (also CMYK), palette and
alpha images (composited over white, as the official code does), EXIF-rotated photos and linear EXR.
Writing is atomic (``atomic_file``), so an interrupted run never leaves a half-written frame behind.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError

# OpenCV (16-bit colour PNG/TIFF) and OpenEXR are dependencies of the package, but GPU training hosts that carry
# only torch have neither: 8-bit files go through Pillow there, and the two codecs fail only when needed.
try:
    import cv2
except ImportError:
    cv2 = None
try:
    import OpenEXR
except ImportError:
    OpenEXR = None
_CV2_ERRORS: tuple[type[BaseException], ...] = (cv2.error,) if cv2 is not None else ()


# The official list plus .tif and .webp.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".gif", ".tiff", ".tif", ".bmp", ".webp", ".exr")
WRITE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".exr")
DEFAULT_MAX_PIXELS: int = 8192 * 8192

# EXIF orientation -> how to turn the stored pixels into the displayed image (same table as ImageOps.exif_transpose).
_ORIENTATION_OPS = {
    2: lambda a: a[:, ::-1],  # mirror left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1],  # mirror top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transpose
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transverse
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
}
_EXIF_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG = 0x8769  # the sub-directory that holds the exposure tags
_FOCAL_LENGTH_35MM_TAG = 0xA405  # FocalLengthIn35mmFilm, mm
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # the 35 mm frame whose angle of view that focal length keeps


def is_image_file(path: str | Path) -> bool:
    """True when the file name ends with a supported image extension (case-insensitive)."""
    return Path(path).name.lower().endswith(IMAGE_EXTENSIONS)


# ----------------------------------------------------------------------------------------------------- reading


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, channels: int | None = 3) -> np.ndarray:
    """Read an image as float32 (H, W, C).

    8/16-bit files are scaled to [0, 1] (16-bit by 1/65535); EXR keeps its raw linear values. Alpha is composited
    over white. ``channels``: 3 -> RGB (gray replicated), 1 -> one channel (mean of RGB), None -> the file's own
    count (1 for gray, 3 otherwise). Any problem with the file raises ``InputError`` naming it.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, not {channels!r}")
    path = Path(path)
    _check_file(path)
    array = _read_exr(path, max_pixels) if path.suffix.lower() == ".exr" else _read_raster(path, max_pixels)
    return _adapt_channels(array, channels)


def _check_file(path: Path) -> None:
    """Problems visible without opening the file: missing, a folder, empty, unsupported extension."""
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "not a file")
    if not is_image_file(path):
        raise InputError(path, f"unsupported image format {path.suffix!r} (supported: {' '.join(IMAGE_EXTENSIONS)})")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from None
    if size == 0:
        raise InputError(path, "empty file (0 bytes)")


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InputError(path, f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise InputError(path, f"image too large: {width}x{height} = {width * height} pixels (limit {max_pixels})")


def _read_raster(path: Path, max_pixels: int) -> np.ndarray:
    """Pillow for everything but 16-bit colour, which Pillow reduces to 8 bits: that goes through OpenCV."""
    try:
        with warnings.catch_warnings():
            # Our own ``max_pixels`` check replaces Pillow's decompression-bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_size(path, img.width, img.height, max_pixels)
                deep = _is_16bit_colour(img)
                img.load()  # force the full decode: truncated and corrupt files fail here, not later
                orientation = _exif_orientation(img)
                array = _decode_16bit_colour(path) if deep else _pil_to_float(img)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(path, f"image too large: more than {2 * Image.MAX_IMAGE_PIXELS} pixels") from None
    except UnidentifiedImageError:
        raise InputError(path, "not an image or an unsupported format") from None
    except PermissionError as err:
        raise InputError(path, f"cannot read: {err.strerror or 'permission denied'}") from None
    except (OSError, SyntaxError, ValueError, EOFError, *_CV2_ERRORS) as err:
        # Pillow reports truncated/corrupt data as OSError, SyntaxError or ValueError depending on the codec.
        raise InputError(path, f"corrupt or truncated image ({_describe(err)})") from None
    except MemoryError:
        raise
    except Exception as err:  # codec plugins raise odd types (struct.error, ...): still one line naming the file
        raise InputError(path, f"unreadable image ({type(err).__name__}: {_describe(err)})") from None
    op = _ORIENTATION_OPS.get(orientation)
    return np.ascontiguousarray(op(array)) if op is not None else array


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not reject otherwise good pixels
        return 1


def exif_fov(path: str | Path) -> float | None:
    """Vertical field of view (degrees) of a photo as displayed, read off its EXIF 35 mm-equivalent focal length;
    None where the file has none (or no readable EXIF: the camera is optional, the pixels are what the reader checks).

    Phones and most cameras write that tag; it needs no sensor size, unlike the plain focal length."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            focal = float(exif.get_ifd(_EXIF_IFD_TAG).get(_FOCAL_LENGTH_35MM_TAG) or 0)
            width, height = img.size
            orientation = _exif_orientation(img)
    except Exception:  # a broken EXIF block only loses the camera, as it only loses the orientation above
        return None
    if focal <= 0:
        return None
    if orientation in (5, 6, 7, 8):  # stored turned a quarter: the displayed height is the stored width
        width, height = height, width
    return vertical_fov_35mm(focal, width, height)


def vertical_fov_35mm(focal_mm: float, width: int, height: int) -> float:
    """Vertical field of view (degrees) of a ``width`` x ``height`` image shot at 35 mm-equivalent ``focal_mm``.

    The equivalent focal length gives the image's diagonal the angle of view that a 36 x 24 mm frame's diagonal has
    (CIPA DC-008), whatever the image's aspect: its height is its share of that diagonal."""
    half_height_mm = FULL_FRAME_DIAGONAL_MM / 2 * height / math.hypot(width, height)
    return math.degrees(2 * math.atan(half_height_mm / focal_mm))


def _is_16bit_colour(img: Image.Image) -> bool:
    """True for 16-bit RGB(A)/LA data that Pillow would silently reduce to 8 bits (read before ``load``)."""
    if img.mode not in ("RGB", "RGBA", "LA"):
        return False
    for tile in img.tile:
        rawmode = tile.args[0] if isinstance(tile.args, tuple) and tile.args else tile.args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _decode_16bit_colour(path: Path) -> np.ndarray:
    """OpenCV decode of a 16-bit colour file -> float32 (H, W, C) RGB(A) in [0, 1]."""
    _require(cv2, "opencv-python-headless", path)
    raw = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InputError(path, "corrupt or truncated image (OpenCV cannot decode it)")
    scale = 1.0 / np.iinfo(raw.dtype).max if raw.dtype.kind in "ui" else 1.0
    array = raw.astype(np.float32) * np.float32(scale)
    if array.ndim == 2:
        return array[..., None]
    if array.shape[2] == 2:  # gray + alpha
        return _composite(array[..., :1], array[..., 1:])
    if array.shape[2] == 4:  # BGRA
        return _composite(array[..., 2::-1], array[..., 3:])
    return np.ascontiguousarray(array[..., ::-1])  # BGR -> RGB


def _pil_to_float(img: Image.Image) -> np.ndarray:
    """A decoded Pillow image -> float32 (H, W, 1 or 3), alpha composited over white."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("La",):
        img = img.convert("LA")
    elif mode in ("RGBa",):
        img = img.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
    mode = img.mode
    array = np.asarray(img)
    if mode.startswith("I"):
        # 16-bit grayscale ("I;16*"; Pillow also uses "I" for 16-bit PNG/TIFF gray).
        out = array.astype(np.float32) / np.float32(65535.0)
    elif mode == "F":
        out = array.astype(np.float32)
    else:
        out = array.astype(np.float32) / np.float32(255.0)
    if out.ndim == 2:
        return out[..., None]
    if mode == "LA":
        return _composite(out[..., :1], out[..., 1:])
    if mode == "RGBA":
        return _composite(out[..., :3], out[..., 3:])
    return out


def _composite(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Over a white background, as the official loader: rgb * a + 1 * (1 - a)."""
    return (color * alpha + (1.0 - alpha)).astype(np.float32)


def _require(module: object, package: str, path: Path) -> None:
    if module is None:
        raise InputError(path, f"this file type needs the {package} package, which is not installed")


def _read_exr(path: Path, max_pixels: int) -> np.ndarray:
    _require(OpenEXR, "openexr", path)
    """Raw linear float32 (H, W, 1 or 3) of an EXR; alpha is ignored (EXR colour is usually premultiplied)."""
    try:
        with OpenEXR.File(str(path), header_only=True) as f:
            lo, hi = f.header()["dataWindow"]
        _check_size(path, int(hi[0] - lo[0] + 1), int(hi[1] - lo[1] + 1), max_pixels)
        with OpenEXR.File(str(path)) as f:
            array = _exr_pixels(path, f.channels())
    except InputError:
        raise
    except Exception as err:  # OpenEXR raises bare RuntimeError/Exception for bad files
        detail = _describe(err).replace(f"'{path}'", "the file")  # OpenEXR repeats the path
        raise InputError(path, f"corrupt or unreadable EXR ({detail})") from None
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(path, f"EXR contains {bad} NaN/Inf values")
    return array


def _exr_pixels(path: Path, channels: dict) -> np.ndarray:
    if "RGB" in channels or "RGBA" in channels:
        pixels = np.asarray(channels["RGB" if "RGB" in channels else "RGBA"].pixels)[..., :3]
    elif "Y" in channels:
        pixels = np.asarray(channels["Y"].pixels)
    elif len(channels) == 1:
        pixels = np.asarray(next(iter(channels.values())).pixels)
    else:
        raise InputError(path, f"unsupported EXR channels {sorted(channels)} (expected RGB, RGBA or Y)")
    pixels = pixels.astype(np.float32)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _adapt_channels(array: np.ndarray, channels: int | None) -> np.ndarray:
    """(H, W, 1 or 3) -> (H, W, channels)."""
    have = array.shape[2]
    if channels is None or channels == have:
        return np.ascontiguousarray(array, dtype=np.float32)
    if channels == 3:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2), dtype=np.float32)
    return array.mean(axis=2, keepdims=True, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------- writing


def write_image(path: str | Path, array: np.ndarray, *, bit_depth: int = 8, quality: int = 95) -> None:
    """Write float (H, W), (H, W, 1) or (H, W, 3) atomically; the format follows the suffix.

    PNG: 8 or 16 bit; JPEG: 8 bit, ``quality``, no chroma subsampling (G-buffers have sharp colour edges);
    integer formats clip to [0, 1] and round to nearest. EXR: float32 raw values, channel "Y" or "RGB", ZIP.
    An unwritable destination raises ``InputError(path, "cannot write: ...")``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_EXTENSIONS:
        raise InputError(
            path, f"cannot write {suffix or 'files without extension'} (supported: {' '.join(WRITE_EXTENSIONS)})"
        )
    if bit_depth not in (8, 16) or (bit_depth == 16 and suffix != ".png"):
        raise ValueError(f"{path}: bit_depth {bit_depth} is not supported for {suffix}")
    array = _as_hwc(np.asarray(array))
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: refusing to write an image with NaN/Inf values")
    try:
        with atomic_file(path) as tmp:
            if suffix == ".exr":
                _write_exr(tmp, array)
            elif suffix == ".png" and bit_depth == 16:
                _write_png16(tmp, array)
            else:
                _write_pil(tmp, array, quality)
    except OSError as err:
        raise InputError(path, f"cannot write: {err.strerror or _describe(err)}") from None
    except (*_CV2_ERRORS, RuntimeError) as err:
        raise InputError(path, f"cannot write: {_describe(err)}") from None


def _as_hwc(array: np.ndarray) -> np.ndarray:
    """(H, W) | (H, W, 1 or 3) -> (H, W, C); anything else is a programming error."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape:
        raise ValueError(f"expected an image array (H, W), (H, W, 1) or (H, W, 3), got shape {array.shape}")
    return array


def quantize(array: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """[0, 1] floats -> uint8/uint16 with clipping and round-to-nearest (floor(v * max + 0.5))."""
    maxval = (1 << bit_depth) - 1
    scaled = np.floor(np.clip(np.asarray(array, dtype=np.float64), 0.0, 1.0) * maxval + 0.5)
    return scaled.astype(np.uint8 if bit_depth == 8 else np.uint16)


def _write_pil(tmp: Path, array: np.ndarray, quality: int) -> None:
    data = quantize(array, 8)  # (H, W, C)
    img = Image.fromarray(data[..., 0] if data.shape[2] == 1 else data, mode="L" if data.shape[2] == 1 else "RGB")
    if tmp.suffix.lower() == ".png":
        img.save(tmp, format="PNG")
    else:
        img.save(tmp, format="JPEG", quality=quality, subsampling=0)


def _write_png16(tmp: Path, array: np.ndarray) -> None:
    _require(cv2, "opencv-python-headless", tmp)
    data = quantize(array, 16)  # (H, W, C)
    data = data[..., 0] if data.shape[2] == 1 else np.ascontiguousarray(data[..., ::-1])  # RGB -> BGR
    if not cv2.imwrite(str(tmp), data):
        raise OSError(f"OpenCV could not write {tmp.name}")


def _write_exr(tmp: Path, array: np.ndarray) -> None:
    _require(OpenEXR, "openexr", tmp)
    pixels = np.ascontiguousarray(array, dtype=np.float32)
    channels = {"Y": np.ascontiguousarray(pixels[..., 0])} if pixels.shape[2] == 1 else {"RGB": pixels}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(str(tmp))
