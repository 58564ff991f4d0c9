"""Image and G-buffer metrics of the evaluation suite: small pure numpy functions, named after the math.

Conventions: images are float arrays (..., H, W, C) in the package's ranges (``conventions.py``); a ``mask`` is
(..., H, W, 1) (or (..., H, W)), nonzero where a pixel counts; a metric over an empty mask is NaN (undefined),
a perfect PSNR (up to float rounding) is +inf. Everything is computed in float64.

* :func:`si_psnr`: basecolor is only defined up to the light's intensity, so each channel of the prediction is
  first scaled by its least-squares factor ``s_c = <p, g> / <p, p>`` (the metric of intrinsic-image work).
* :func:`normal_angle_deg` / :func:`angle_stats`: angular error of unit normals (mean, median, % within 11.25°,
  22.5° and 30°, the thresholds of the surface-normal literature).
* :func:`depth_metrics`: relative depth is defined up to an affine map, so the prediction is fitted to the metric
  ground truth by least-squares scale and shift, then AbsRel ``mean(|z' - z| / z)`` and δ1
  ``mean(max(z'/z, z/z') < 1.25)`` (Eigen et al.; Marigold's affine-invariant protocol).
* :func:`exposure_psnr`: forward / relit frames after one least-squares exposure gain in linear light (over the
  pixels the ground truth does not clip): how much of the error is the light's power rather than its shading.
* :func:`rmse`, :func:`psnr`, :func:`ssim` (Gaussian window 11 x 11, σ = 1.5, K1 = 0.01, K2 = 0.03; Wang et al.
  2004) and :func:`flip` (NVIDIA's ꟻLIP, LDR, through the ``flip_evaluator`` package).
"""

from __future__ import annotations

import math

import numpy as np

from diffusion_renderer.conventions import linear_to_srgb, srgb_to_linear

ANGLE_THRESHOLDS_DEG: tuple[float, ...] = (11.25, 22.5, 30.0)
DELTA1_THRESHOLD = 1.25
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
CLIPPED = 1.0 - 1.0 / 512  # an sRGB value at or above is clipped white (half an 8-bit step below 1)
EXACT_RMSE = 1e-6  # relative to the peak: differences below are float rounding (PSNR +inf)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _select(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean (..., H, W) pixel selection from a (..., H, W[, 1]) mask; everything without one."""
    pixels = shape[:-1]
    if mask is None:
        return np.ones(pixels, dtype=bool)
    m = np.asarray(mask)
    if m.ndim == len(shape) and m.shape[-1] == 1:
        m = m[..., 0]
    return np.broadcast_to(m > 0.5, pixels)


def mse_to_psnr(mse: float, peak: float = 1.0) -> float:
    """10 log10(peak² / mse); +inf for a match up to float rounding (RMSE below ``EXACT_RMSE`` of the peak, i.e.
    over 120 dB: float32 images carry 24 bits, a scaled float32 copy differs by ~1e-8), NaN when undefined."""
    if math.isnan(mse):
        return math.nan
    return math.inf if mse <= (EXACT_RMSE * peak) ** 2 else 10.0 * math.log10(peak * peak / mse)


def psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, peak: float = 1.0) -> float:
    """PSNR (dB) of (..., H, W, C) images over the masked pixels (all channels)."""
    sel = _select(mask, gt.shape)
    if not sel.any():
        return math.nan
    diff = _f64(pred)[sel] - _f64(gt)[sel]  # (N, C)
    return mse_to_psnr(float(np.mean(diff * diff)), peak)


def rmse(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square error of (..., H, W, C) arrays over the masked pixels (roughness, metallic)."""
    sel = _select(mask, gt.shape)
    if not sel.any():
        return math.nan
    diff = _f64(pred)[sel] - _f64(gt)[sel]
    return float(np.sqrt(np.mean(diff * diff)))


def least_squares_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(C,) per-channel ``s_c = <p, g> / <p, p>`` over the masked pixels (0 where the prediction is all zero)."""
    sel = _select(mask, gt.shape)
    p, g = _f64(pred)[sel], _f64(gt)[sel]  # (N, C)
    num, den = (p * g).sum(axis=0), (p * p).sum(axis=0)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def si_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Scale-invariant PSNR (dB, peak 1) of basecolor (..., H, W, 3): PSNR of ``s * pred`` vs ``gt``, ``s`` per
    channel from :func:`least_squares_scale`, both over the masked pixels. A scaled copy of ``gt`` gives +inf."""
    if not _select(mask, gt.shape).any():
        return math.nan
    return psnr(_f64(pred) * least_squares_scale(pred, gt, mask), gt, mask)


def exposure_gain(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The least-squares exposure ``k = <p, g> / <p, p>`` of sRGB display frames (..., H, W, 3), fitted in linear
    light over the masked pixels that the ground truth does not clip (a clipped pixel only bounds the exposure
    from below); 1 when nothing is left to fit."""
    sel = _select(mask, gt.shape) & (_f64(gt) < CLIPPED).any(axis=-1)
    p, g = srgb_to_linear(_f64(pred)[sel]), srgb_to_linear(_f64(gt)[sel])
    den = float((p * p).sum())
    return float((p * g).sum()) / den if den > 0 else 1.0


def exposure_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of sRGB display frames after :func:`exposure_gain`: the prediction scaled in linear light, clipped
    to [0, 1] and re-encoded. Relit images are defined only up to the light's unknown power when it is read from
    an LDR/log-encoded map, so this separates a wrong exposure from wrong shading (the gap to :func:`psnr`). Not
    bounded below by :func:`psnr`: the gain is fitted in linear light over unclipped pixels, the error is sRGB."""
    if not _select(mask, gt.shape).any():
        return math.nan
    scaled = linear_to_srgb(np.clip(srgb_to_linear(_f64(pred)) * exposure_gain(pred, gt, mask), 0.0, 1.0))
    return psnr(scaled, gt, mask)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def normal_angle_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) normals in [-1, 1] -> (..., H, W) angle between them in degrees, both renormalised.

    ``atan2(|p x g|, p . g)`` stays accurate for small angles, where ``acos`` of the dot product does not.
    """
    p, g = _unit(_f64(pred)), _unit(_f64(gt))
    cross = np.linalg.norm(np.cross(p, g), axis=-1)
    return np.degrees(np.arctan2(cross, (p * g).sum(axis=-1)))


def angle_stats(angles_deg: np.ndarray, thresholds: tuple[float, ...] = ANGLE_THRESHOLDS_DEG) -> dict[str, float]:
    """Mean, median and the % of angles below each threshold: ``{"mean", "median", "within_11.25", ...}``."""
    a = _f64(angles_deg).reshape(-1)
    if a.size == 0:
        return {"mean": math.nan, "median": math.nan, **{f"within_{t:g}": math.nan for t in thresholds}}
    stats = {"mean": float(a.mean()), "median": float(np.median(a))}
    stats.update({f"within_{t:g}": float(100.0 * np.mean(a < t)) for t in thresholds})
    return stats


def normal_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """:func:`angle_stats` of :func:`normal_angle_deg` over the masked pixels."""
    return angle_stats(normal_angle_deg(pred, gt)[_select(mask, gt.shape)])


def fit_scale_shift(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """(a, b) minimising ``sum (a p + b - g)²`` over the masked pixels (least squares, one channel)."""
    sel = _select(mask, gt.shape)
    p, g = _f64(pred)[sel].reshape(-1), _f64(gt)[sel].reshape(-1)
    design = np.stack([p, np.ones_like(p)], axis=1)  # (N, 2)
    (a, b), *_ = np.linalg.lstsq(design, g, rcond=None)
    return float(a), float(b)


def abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    """``mean(|p - g| / g)`` of depth values (flattened, gt > 0)."""
    p, g = _f64(pred), _f64(gt)
    return float(np.mean(np.abs(p - g) / g))


def delta1(pred: np.ndarray, gt: np.ndarray, threshold: float = DELTA1_THRESHOLD) -> float:
    """Fraction of depths with ``max(p / g, g / p) < threshold``; non-positive predictions count as misses."""
    p, g = _f64(pred), _f64(gt)
    ratio = np.where(p > 0, np.maximum(p / g, g / np.where(p > 0, p, 1.0)), np.inf)
    return float(np.mean(ratio < threshold))


def depth_metrics(pred: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """AbsRel and δ1 of ``pred`` (any affine depth code, e.g. [-1, 1]) after least-squares scale and shift to the
    metric ``gt_depth`` over the masked pixels with ``gt_depth > 0``: ``{"abs_rel", "delta1"}``."""
    sel = _select(mask, gt_depth.shape) & (_f64(gt_depth)[..., 0] > 0)
    if not sel.any():
        return {"abs_rel": math.nan, "delta1": math.nan}
    p, g = _f64(pred)[sel].reshape(-1), _f64(gt_depth)[sel].reshape(-1)
    a, b = fit_scale_shift(p[:, None], g[:, None])
    aligned = a * p + b
    return {"abs_rel": abs_rel(aligned, g), "delta1": delta1(aligned, g)}


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """(size,) normalised 1-D Gaussian; the 2-D window is its outer product (separable filtering)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H - k + 1, W - k + 1, C): separable correlation with ``kernel``, no padding."""
    k = kernel.size
    rows = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ kernel  # (H - k + 1, W, C)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ kernel


def ssim(pred: np.ndarray, gt: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two (H, W, C) (or (H, W)) images in [0, ``data_range``], channels averaged.

    Gaussian-weighted local statistics (11 x 11, σ 1.5) over the window positions inside the image (no padding);
    images smaller than the window use the largest odd window that fits.
    """
    x, y = _f64(pred), _f64(gt)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    size = min(SSIM_WINDOW, x.shape[0], x.shape[1])
    size -= 1 - size % 2
    w = gaussian_window(size)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
    var_x = _filter_valid(x * x, w) - mu_x * mu_x
    var_y = _filter_valid(y * y, w) - mu_y * mu_y
    cov = _filter_valid(x * y, w) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def flip(pred: np.ndarray, gt: np.ndarray) -> tuple[float, np.ndarray]:
    """ꟻLIP (LDR) of an (H, W, 3) sRGB [0, 1] prediction against the reference: (mean error, (H, W) error map).

    0 is identical, 1 the largest perceived difference; the default viewing condition (67 pixels per degree).
    """
    import flip_evaluator

    reference = np.ascontiguousarray(np.clip(gt, 0.0, 1.0), dtype=np.float32)
    test = np.ascontiguousarray(np.clip(pred, 0.0, 1.0), dtype=np.float32)
    error_map, mean, _ = flip_evaluator.evaluate(reference, test, "LDR", applyMagma=False)
    return float(mean), np.asarray(error_map, dtype=np.float32).reshape(reference.shape[:2])
