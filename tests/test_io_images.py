"""read_image / write_image, including a corpus of bad files that must each become one InputError."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest
from PIL import Image, ImageFile, ImageOps

from diffusion_renderer.io import images
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.images import IMAGE_EXTENSIONS, is_image_file, quantize, read_image, write_image

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "examples"


def example(name: str) -> Path:
    path = EXAMPLES / "images" / name
    if not path.is_file():
        pytest.skip(f"example media absent: {path}")
    return path


def rng_image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def jpeg_bytes(h: int = 128, w: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng_image(h, w)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_exr(path: Path, channels: dict[str, np.ndarray]) -> Path:
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(str(path))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------------------- good files


def test_extensions() -> None:
    assert IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg", ".gif", ".tiff", ".tif", ".bmp", ".webp", ".exr")
    assert is_image_file("a/B.PNG") and is_image_file("x.Exr") and is_image_file(Path("y.tif"))
    assert not is_image_file("clip.mp4") and not is_image_file("png")


def test_real_examples() -> None:
    jpg = read_image(example("image_1.jpg"))
    assert jpg.shape == (704, 1280, 3) and jpg.dtype == np.float32
    assert jpg.min() >= 0.0 and jpg.max() <= 1.0
    png = read_image(example("astronaut.png"))
    assert png.shape == (512, 512, 3)
    assert read_image(example("coffee.png")).shape == (400, 600, 3)


def test_8bit_rgb_exact(tmp_path: Path) -> None:
    data = rng_image(7, 9)
    Image.fromarray(data).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, data.astype(np.float32) / 255)


def test_grayscale_and_channels(tmp_path: Path) -> None:
    data = rng_image(5, 6, 1)[..., 0]
    Image.fromarray(data, mode="L").save(tmp_path / "g.png")
    rgb = read_image(tmp_path / "g.png")
    assert rgb.shape == (5, 6, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    own = read_image(tmp_path / "g.png", channels=None)
    assert own.shape == (5, 6, 1)
    np.testing.assert_array_equal(own[..., 0], data / np.float32(255))
    color = rng_image(4, 4)
    Image.fromarray(color).save(tmp_path / "c.png")
    one = read_image(tmp_path / "c.png", channels=1)
    assert one.shape == (4, 4, 1)
    np.testing.assert_allclose(one[..., 0], color.mean(axis=2) / 255, atol=1e-6)
    with pytest.raises(ValueError):
        read_image(tmp_path / "c.png", channels=2)


def test_16bit_png_gray_and_rgb(tmp_path: Path) -> None:
    values = np.array([[0, 1, 257, 65535], [1000, 30000, 40000, 65534]], dtype=np.uint16)  # (2, 4)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    gray = read_image(tmp_path / "g16.png", channels=None)
    assert gray.shape == (2, 4, 1)
    np.testing.assert_allclose(gray[..., 0], values / 65535.0, rtol=0, atol=1e-7)

    rgb = np.stack([values, values // 2, 65535 - values], axis=-1)  # (2, 4, 3) RGB
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "rgb16.png")
    np.testing.assert_allclose(out, rgb / 65535.0, rtol=0, atol=1e-7)  # full 16-bit precision, RGB order


def test_16bit_rgba_png_composited(tmp_path: Path) -> None:
    rgba = np.array([[[65535, 0, 0, 32768], [0, 0, 65535, 65535]]], dtype=np.uint16)  # (1, 2, 4) RGBA
    cv2.imwrite(str(tmp_path / "rgba16.png"), rgba[..., [2, 1, 0, 3]])
    out = read_image(tmp_path / "rgba16.png")
    a = 32768 / 65535
    np.testing.assert_allclose(out[0, 0], [1.0, 1 - a, 1 - a], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [0.0, 0.0, 1.0], atol=1e-6)


def test_rgba_and_la_over_white(tmp_path: Path) -> None:
    Image.new("RGBA", (3, 2), (200, 100, 0, 128)).save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    a = 128 / 255
    expected = np.array([200, 100, 0]) / 255 * a + (1 - a)
    np.testing.assert_allclose(out[1, 2], expected, atol=1e-6)
    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")  # fully transparent black -> white
    np.testing.assert_allclose(read_image(tmp_path / "la.png"), 1.0)


def test_palette_images(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png")[0, 0], [1, 0, 0])
    img.save(tmp_path / "pt.png", transparency=1)  # index 1 transparent -> white
    np.testing.assert_allclose(read_image(tmp_path / "pt.png")[0, 0], [1, 1, 1])
    img.save(tmp_path / "p.gif")
    np.testing.assert_allclose(read_image(tmp_path / "p.gif")[0, 0], [1, 0, 0])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out[8, 8], [1, 0, 0], atol=0.05)


def test_one_pixel(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    np.testing.assert_allclose(read_image(tmp_path / "one.png"), [[[10 / 255, 20 / 255, 30 / 255]]], atol=1e-7)


def test_other_formats(tmp_path: Path) -> None:
    data = rng_image(6, 5)
    for ext in (".bmp", ".tif", ".webp"):
        kwargs = {"lossless": True} if ext == ".webp" else {}
        Image.fromarray(data).save(tmp_path / f"x{ext}", **kwargs)
        np.testing.assert_array_equal(read_image(tmp_path / f"x{ext}"), data / np.float32(255))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path: Path, orientation: int) -> None:
    img = Image.fromarray(rng_image(3, 5))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png"))) / np.float32(255)
    out = read_image(tmp_path / "o.png")
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_exif_orientation_jpeg(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise for display
    Image.fromarray(rng_image(16, 32)).save(tmp_path / "photo.jpg", exif=exif)
    assert read_image(tmp_path / "photo.jpg").shape == (32, 16, 3)


def photo_with_focal_length(
    path: Path, height: int, width: int, focal_35mm: float | None, orientation: int = 1
) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm  # FocalLengthIn35mmFilm
    Image.fromarray(rng_image(height, width)).save(path, exif=exif)
    return path


def test_exif_fov_from_35mm_equivalent_focal_length(tmp_path: Path) -> None:
    # a 3:2 photo is a full 36 x 24 mm frame: at 50 mm its vertical angle is 2 atan(12 / 50)
    landscape = photo_with_focal_length(tmp_path / "l.jpg", 40, 60, 50)
    assert images.exif_fov(landscape) == pytest.approx(2 * np.degrees(np.arctan(12 / 50)))
    # stored landscape, shown turned a quarter: the displayed height is the long side, 2 atan(18 / 50)
    portrait = photo_with_focal_length(tmp_path / "p.jpg", 40, 60, 50, orientation=6)
    assert images.exif_fov(portrait) == pytest.approx(2 * np.degrees(np.arctan(18 / 50)))
    # the diagonal keeps its angle whatever the aspect: a square's side sees 43.27 / sqrt(2) mm
    square = photo_with_focal_length(tmp_path / "s.png", 32, 32, 24)
    assert images.exif_fov(square) == pytest.approx(2 * np.degrees(np.arctan(np.hypot(36, 24) / np.sqrt(2) / 48)))
    # none: no tag, a zero tag (unknown), no EXIF at all, not an image
    assert images.exif_fov(photo_with_focal_length(tmp_path / "n.jpg", 8, 8, None)) is None
    assert images.exif_fov(photo_with_focal_length(tmp_path / "z.jpg", 8, 8, 0)) is None
    Image.fromarray(rng_image(8, 8)).save(tmp_path / "plain.png")
    assert images.exif_fov(tmp_path / "plain.png") is None
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert images.exif_fov(tmp_path / "bad.jpg") is None


# ----------------------------------------------------------------------------------------------------- EXR


def test_exr_raw_values_roundtrip(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(size=(6, 7, 3)).astype(np.float32) * 10  # beyond [0, 1], negatives
    write_image(tmp_path / "a.exr", data)
    np.testing.assert_array_equal(read_image(tmp_path / "a.exr"), data)
    one = data[..., :1]
    write_image(tmp_path / "y.exr", one)
    with OpenEXR.File(str(tmp_path / "y.exr")) as f:
        assert list(f.channels()) == ["Y"]
    np.testing.assert_array_equal(read_image(tmp_path / "y.exr", channels=None), one)
    np.testing.assert_array_equal(read_image(tmp_path / "y.exr", channels=1), one)
    np.testing.assert_array_equal(read_image(tmp_path / "y.exr"), np.repeat(one, 3, axis=2))
    np.testing.assert_allclose(read_image(tmp_path / "a.exr", channels=1)[..., 0], data.mean(axis=2), atol=1e-5)


def test_exr_half_and_rgba(tmp_path: Path) -> None:
    rgba = np.full((2, 3, 4), 0.25, dtype=np.float16)
    write_exr(tmp_path / "h.exr", {"RGBA": rgba})
    out = read_image(tmp_path / "h.exr")
    assert out.dtype == np.float32 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, 0.25)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_exr_nan_inf_rejected(tmp_path: Path, bad: float) -> None:
    data = np.zeros((4, 4, 3), dtype=np.float32)
    data[1, 2, 0] = bad
    path = write_exr(tmp_path / "bad.exr", {"RGB": data})
    with pytest.raises(InputError, match="NaN/Inf") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_exr_too_large_checked_on_header(tmp_path: Path) -> None:
    path = write_exr(tmp_path / "big.exr", {"RGB": np.zeros((20, 30, 3), dtype=np.float32)})
    with pytest.raises(InputError, match=r"30x20 = 600 pixels \(limit 100\)"):
        read_image(path, max_pixels=100)


# ----------------------------------------------------------------------------------------------------- bad corpus


def bad_corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex the message must match)."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, tuple[Path, str]] = {}

    def add(name: str, data: bytes, pattern: str) -> None:
        path = folder / name
        path.write_bytes(data)
        corpus[name] = (path, pattern)

    add("empty.png", b"", "empty file")
    add("empty.exr", b"", "empty file")
    add("text.png", b"this is not an image\n" * 10, "not an image")
    add("text.jpg", b"hello", "not an image")
    jpeg = jpeg_bytes()
    add("truncated.jpg", jpeg[: len(jpeg) // 2], "corrupt or truncated")
    png = io.BytesIO()
    Image.fromarray(rng_image(64, 64)).save(png, format="PNG")
    add("truncated.png", png.getvalue()[: len(png.getvalue()) // 2], "corrupt or truncated")
    add("garbage.exr", b"\x76\x2f\x31\x01" + os.urandom(200), "EXR")
    add("text.exr", b"not an exr at all", "EXR")
    exr = folder / "full.exr"
    write_image(exr, np.random.default_rng(3).random((64, 64, 3)))
    add("truncated.exr", exr.read_bytes()[: exr.stat().st_size // 2], "corrupt or unreadable EXR")
    exr.unlink()
    add("notes.xyz", b"abc", "unsupported image format")
    corpus["missing.png"] = (folder / "missing.png", "no such file")
    (folder / "dir.png").mkdir(exist_ok=True)
    corpus["dir.png"] = (folder / "dir.png", "not a file")
    return corpus


def test_bad_corpus_each_one_input_error(tmp_path: Path) -> None:
    for name, (path, pattern) in bad_corpus(tmp_path / "bad").items():
        with pytest.raises(InputError, match=pattern) as info:
            read_image(path)
        message = str(info.value)
        assert message.startswith(f"{path}: "), name
        assert "\n" not in message, name


def test_truncated_real_jpeg(tmp_path: Path) -> None:
    data = example("image_1.jpg").read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the decode must not quietly pad the missing half


def test_huge_image_rejected_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("1", (5000, 5000)).save(path)  # a few KB on disk, 25 M pixels
    with pytest.raises(InputError, match=r"5000x5000 = 25000000 pixels \(limit 1000000\)"):
        read_image(path, max_pixels=1000 * 1000)
    assert read_image(path, max_pixels=5000 * 5000, channels=1).shape == (5000, 5000, 1)


# ----------------------------------------------------------------------------------------------------- writing


def test_write_png_8bit_rounding_and_clipping(tmp_path: Path) -> None:
    data = np.array([[0.5, 1.2, -0.1, 0.5 / 255, 0.49 / 255, 1.0]], dtype=np.float32)  # (1, 6)
    write_image(tmp_path / "r.png", data)
    stored = np.asarray(Image.open(tmp_path / "r.png"))
    np.testing.assert_array_equal(stored, [[128, 255, 0, 1, 0, 255]])
    np.testing.assert_array_equal(quantize(data, 16)[0, :3], [32768, 65535, 0])


def test_write_read_roundtrips(tmp_path: Path) -> None:
    data = rng_image(9, 11).astype(np.float32) / 255
    write_image(tmp_path / "a.png", data)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), data)
    write_image(tmp_path / "g.png", data[..., 0])
    assert Image.open(tmp_path / "g.png").mode == "L"
    np.testing.assert_array_equal(read_image(tmp_path / "g.png", channels=None)[..., 0], data[..., 0])

    deep = np.random.default_rng(2).random((5, 4, 3)).astype(np.float32)
    write_image(tmp_path / "d.png", deep, bit_depth=16)
    np.testing.assert_allclose(read_image(tmp_path / "d.png"), deep, atol=0.5 / 65535 + 1e-7)
    write_image(tmp_path / "d1.png", deep[..., :1], bit_depth=16)
    np.testing.assert_allclose(read_image(tmp_path / "d1.png", channels=None), deep[..., :1], atol=0.5 / 65535 + 1e-7)

    smooth = np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None], (16, 1, 3))
    write_image(tmp_path / "s.jpg", smooth, quality=95)
    assert np.abs(read_image(tmp_path / "s.jpg") - smooth).max() < 0.03
    write_image(tmp_path / "s.jpeg", smooth[..., 0])
    assert read_image(tmp_path / "s.jpeg", channels=None).shape == (16, 32, 1)


def test_write_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.png"
    write_image(target, np.zeros((2, 2, 3)))
    assert target.is_file() and leftovers(target.parent) == []


def test_write_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot write \.bmp"):
        write_image(tmp_path / "x.bmp", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="bit_depth"):
        write_image(tmp_path / "x.jpg", np.zeros((2, 2, 3)), bit_depth=16)
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "x.png", np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "x.exr", np.full((2, 2, 3), np.nan))
    assert list(tmp_path.iterdir()) == []


def test_write_failure_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    write_image(target, np.ones((4, 4, 3)))
    before = target.read_bytes()

    def broken(tmp: Path, array: np.ndarray, quality: int) -> None:
        tmp.write_bytes(b"half a png")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images, "_write_pil", broken)
    with pytest.raises(InputError, match="cannot write: No space left on device"):
        write_image(target, np.zeros((4, 4, 3)))
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_write_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write") as info:
        write_image(tmp_path / "file" / "out.png", np.zeros((2, 2, 3)))
    assert str(info.value).startswith(str(tmp_path / "file" / "out.png"))


def test_write_unwritable_folder(read_only_dir: Path) -> None:
    with pytest.raises(InputError, match="cannot write"):
        write_image(read_only_dir / "out.exr", np.zeros((2, 2, 3)))
    assert list(read_only_dir.iterdir()) == []


def test_write_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path as a read-only folder, testable as root: creating the temporary file fails."""

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match="cannot write: Permission denied"):
        write_image(tmp_path / "out.png", np.zeros((2, 2, 3)))
    assert list(tmp_path.iterdir()) == []
