"""Colour temperature of light: RGB gains that move a light's white point along the Planckian locus.

Used by the data engine to widen a handful of HDRIs into many lighting colours (``LightingSpec.tint``): a warm
3,500 K interior or a blue 10,000 K shade from the same map. Lighting is linear, so a per-channel gain on the map
is exactly a gain on the light it casts. Gains keep the luminance (Rec. 709 weights), so the light's
``intensity`` keeps its meaning.

Why by hand: the chromaticity of a black body needs either the CIE observer tables or an approximation; colour
libraries (colour-science) are heavy dependencies for three polynomials. We use the cubic-spline fit of the
Planckian locus of Kim et al. (2002), valid for 1,667-25,000 K (within 1e-3 in xy), then CIE XYZ -> linear sRGB.
"""

from __future__ import annotations

from typing import Final

import numpy as np

REFERENCE_KELVIN: Final[float] = 6504.0  # the Planckian temperature nearest to D65, sRGB's white: gain (1, 1, 1)
KELVIN_RANGE: Final[tuple[float, float]] = (1667.0, 25000.0)  # where the locus fit holds
# CIE XYZ -> linear sRGB (D65), IEC 61966-2-1
XYZ_TO_SRGB: Final[np.ndarray] = np.array(
    [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560], [0.0556434, -0.2040259, 1.0572252]]
)
LUMA: Final[np.ndarray] = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 luminance of linear sRGB


def planckian_xy(kelvin: float) -> tuple[float, float]:
    """CIE 1931 chromaticity (x, y) of a black body at ``kelvin`` (Kim et al. 2002 fit)."""
    lo, hi = KELVIN_RANGE
    if not lo <= kelvin <= hi:
        raise ValueError(f"colour temperature {kelvin} K outside {lo:.0f}-{hi:.0f} K")
    t = 1.0 / kelvin
    if kelvin <= 4000.0:
        x = -0.2661239e9 * t**3 - 0.2343589e6 * t**2 + 0.8776956e3 * t + 0.179910
    else:
        x = -3.0258469e9 * t**3 + 2.1070379e6 * t**2 + 0.2226347e3 * t + 0.240390
    if kelvin <= 2222.0:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif kelvin <= 4000.0:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    return x, y


def planckian_rgb(kelvin: float) -> np.ndarray:
    """(3,) linear sRGB colour of a black body at ``kelvin``, unit luminance (may leave the gamut below ~2,000 K)."""
    x, y = planckian_xy(kelvin)
    rgb = XYZ_TO_SRGB @ np.array([x / y, 1.0, (1.0 - x - y) / y])
    return rgb / float(LUMA @ rgb)


def white_balance_gain(kelvin: float, reference: float = REFERENCE_KELVIN) -> np.ndarray:
    """(3,) per-channel gain turning light of colour temperature ``reference`` into ``kelvin``, unit luminance.

    Below the reference the gain is warm (red > blue), above it cool; ``gain(reference) = (1, 1, 1)``.
    """
    gain = np.clip(planckian_rgb(kelvin) / planckian_rgb(reference), 0.0, None)
    return gain / float(LUMA @ gain)
