"""Contact sheets: labelled rows of captioned image tiles in one PNG, for eyeballing inputs and results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from diffusion_renderer.io.atomic import atomic_file

BACKGROUND = (24, 24, 24)
TEXT = (230, 230, 230)
PAD = 6  # pixels between tiles and around the sheet

# Dark blue -> purple -> orange -> light yellow: lightness rises monotonically, readable in grey-scale print.
_DEPTH_ANCHORS = np.array(
    [
        [0.05, 0.03, 0.20],
        [0.30, 0.07, 0.45],
        [0.58, 0.15, 0.45],
        [0.85, 0.33, 0.30],
        [0.98, 0.60, 0.18],
        [0.99, 0.90, 0.55],
    ]
)

Row = tuple[str, Sequence[tuple[str, np.ndarray]]]


def depth_to_color(depth: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1) values in [0, 1] -> (H, W, 3) float colours (piecewise-linear perceptual ramp)."""
    d = np.clip(np.nan_to_num(np.asarray(depth, dtype=np.float64)), 0.0, 1.0)
    if d.ndim == 3:
        d = d[..., 0]
    stops = np.linspace(0.0, 1.0, len(_DEPTH_ANCHORS))
    return np.stack([np.interp(d, stops, _DEPTH_ANCHORS[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _to_pil(image: np.ndarray, tile_height: int) -> Image.Image:
    """Float (H, W, C) in [0, 1], C in {1, 3} (or (H, W)) -> RGB tile of height ``tile_height``, aspect kept."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, 1|3) image, got shape {img.shape}")
    img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
    u8 = (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    tile = Image.fromarray(u8, "RGB")
    width = max(1, round(tile.width * tile_height / tile.height))
    return tile.resize((width, tile_height), Image.Resampling.BILINEAR)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text or " ", font=font)
    return int(right - left), int(bottom - top)


def contact_sheet(rows: Sequence[Row], *, tile_height: int = 256) -> Image.Image:
    """One RGB image: per row, its label at the left, then each (caption, image) tile with the caption above."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    caption_h = _text_size(probe, "Ag", font)[1] + 2 * PAD
    label_w = max((_text_size(probe, label, font)[0] for label, _ in rows), default=0) + 2 * PAD
    tiled = [[(caption, _to_pil(img, tile_height)) for caption, img in tiles] for _, tiles in rows]
    row_w = [sum(tile.width + PAD for _, tile in tiles) for tiles in tiled]
    width = label_w + max(row_w, default=0) + PAD
    row_h = caption_h + tile_height + PAD
    sheet = Image.new("RGB", (width, PAD + row_h * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, ((label, _), tiles) in enumerate(zip(rows, tiled, strict=True)):
        top = PAD + r * row_h
        draw.text((PAD, top + caption_h + tile_height // 2), label, fill=TEXT, font=font, anchor="lm")
        x = label_w
        for caption, tile in tiles:
            draw.text((x, top + PAD // 2), caption, fill=TEXT, font=font)
            sheet.paste(tile, (x, top + caption_h))
            x += tile.width + PAD
    return sheet


def save_contact_sheet(path: str | Path, rows: Sequence[Row], **kwargs: int) -> Path:
    """Write :func:`contact_sheet` as a PNG, atomically; returns the path."""
    path = Path(path)
    sheet = contact_sheet(rows, **kwargs)
    with atomic_file(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
