"""Paired comparison of two evaluations of one data split: is model B better than model A, or is the difference
within the noise of the clips?

Two ``eval`` runs of the same clips (``OUT/metrics.json``) are paired clip by clip: per metric, the mean of the
per-clip differences d = B − A, its standard error sd(d) / √n, and z = mean / SE. A difference is called only
when |z| ≥ 2 (about 95 % under a normal approximation); below that it is "within noise". Why paired: clips differ
far more from each other than two models do on one clip, and pairing removes that spread. Measured 2026-12-04
on 30 held-out clips: two inverse models' relighting differed per clip with a standard deviation of 1.4–1.8 dB, so
the standard error of their mean difference was 0.26–0.33 dB, and a +0.32 dB gain on one set was −0.29 dB on
another (benchmarks/TINY_HISTORY.md, run 30). The clips' metrics are not independent of the set's few light maps,
so read z as a floor on the uncertainty, not its whole.

Per-region metrics (``eval``'s ``by_region``: the ground plane's pixels and the objects') are paired as well, named
``REGION/METRIC`` (``objects/normal_angle_mean``), after the whole-frame metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusion_renderer.eval.evaluate import json_number
from diffusion_renderer.io.errors import InputError

Z_CALLED = 2.0  # |z| from which a difference is called
# Metrics where smaller is better (names as eval writes them); every other metric is better larger.
LOWER_IS_BETTER_SUFFIXES = ("angle_mean", "angle_median", "rmse", "abs_rel", "flip")


def higher_is_better(metric: str) -> bool:
    return not metric.endswith(LOWER_IS_BETTER_SUFFIXES)


@dataclass(frozen=True)
class MetricComparison:
    """One metric of B against A over the clips where both are finite."""

    metric: str
    count: int
    mean_a: float
    mean_b: float
    difference: float  # mean of the per-clip B - A
    standard_error: float  # of ``difference``; NaN below 2 clips
    wins_b: int  # clips where B is better

    @property
    def z(self) -> float:
        if not self.standard_error > 0:  # NaN, or identical differences on every clip
            return math.copysign(math.inf, self.difference) if self.difference else 0.0
        return self.difference / self.standard_error

    @property
    def verdict(self) -> str:
        if self.count < 2 or abs(self.z) < Z_CALLED:
            return "within noise"
        better_b = (self.difference > 0) == higher_is_better(self.metric)
        return "B better" if better_b else "A better"

    def to_dict(self) -> dict[str, object]:
        """For JSON: non-finite figures (z of a difference without spread, SE of one clip) as null, as eval writes."""
        record = {k: getattr(self, k) for k in self.__dataclass_fields__}
        record = {k: json_number(v) if isinstance(v, float) else v for k, v in {**record, "z": self.z}.items()}
        return {**record, "verdict": self.verdict, "higher_is_better": higher_is_better(self.metric)}


def load_evaluation(path: str | Path) -> dict:
    """An ``eval`` result: its output folder or its ``metrics.json``."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError(path, "no metrics.json (give an eval --out folder or its metrics.json)")
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(file, f"not a JSON file ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("samples"), list) or "mode" not in record:
        raise InputError(file, "not an eval metrics.json (no mode or per-clip samples)")
    if not all(isinstance(s, dict) and "clip" in s and isinstance(s.get("metrics"), dict) for s in record["samples"]):
        raise InputError(file, "a sample without its clip name or metrics")
    return record


def sample_metrics(sample: dict) -> dict[str, float | None]:
    """A sample's metrics, its regions' ones (if any) added as ``REGION/METRIC``."""
    regions = sample.get("regions")
    if not isinstance(regions, dict):
        return sample["metrics"]
    per_region = {f"{r}/{k}": v for r, m in regions.items() if isinstance(m, dict) for k, v in m.items()}
    return {**sample["metrics"], **per_region}


def _value(metrics: dict, metric: str) -> float:
    """A sample's metric (``sample_metrics``); NaN when absent or null (eval writes a non-finite value, perfect or
    undefined, as null)."""
    value = metrics.get(metric)
    return math.nan if value is None else float(value)


def _by_clip(record: dict) -> dict[str, dict]:
    return {sample["clip"]: sample for sample in record["samples"]}


def paired_clips(a: dict, b: dict, names: Sequence[str] = ("A", "B")) -> list[str]:
    """The clips both evaluations scored, checked to be the same task: one mode, and for relighting the same
    target map per clip (``eval relight`` pairs each clip with another clip's light)."""
    if a["mode"] != b["mode"]:
        raise InputError(None, f"{names[0]} is an {a['mode']} evaluation, {names[1]} a {b['mode']} one")
    samples_a, samples_b = _by_clip(a), _by_clip(b)
    common = sorted(set(samples_a) & set(samples_b))
    if not common:
        raise InputError(None, f"{names[0]} and {names[1]} share no clips (another data split?)")
    for clip in common:
        if samples_a[clip].get("lighting") != samples_b[clip].get("lighting"):
            raise InputError(None, f"clip {clip} was relit under different lights in {names[0]} and {names[1]}")
    return common


def compare_evaluations(
    a: dict, b: dict, metrics: Sequence[str] | None = None, names: Sequence[str] = ("A", "B")
) -> list[MetricComparison]:
    """Per metric (default: every metric both report), B against A on their common clips; ``names`` for errors."""
    common = paired_clips(a, b, names)
    samples_a, samples_b = _by_clip(a), _by_clip(b)
    flat_a = {c: sample_metrics(samples_a[c]) for c in common}  # each clip's metrics, its regions' included
    flat_b = {c: sample_metrics(samples_b[c]) for c in common}
    if metrics is None:
        both = (m for c in common for m in flat_a[c] if m in flat_b[c])
        metrics = list(dict.fromkeys(both))  # in eval's order
        if not metrics:
            raise InputError(None, f"{names[0]} and {names[1]} report no metric in common")
    results = []
    for metric in metrics:
        pairs = np.array(
            [(_value(flat_a[c], metric), _value(flat_b[c], metric)) for c in common], dtype=np.float64
        ).reshape(-1, 2)  # (clips, 2): A, B
        pairs = pairs[np.isfinite(pairs).all(axis=1)]  # undefined (NaN) or perfect (inf) on either side
        if len(pairs) == 0:
            raise InputError(None, f"no clip has a finite {metric} in both {names[0]} and {names[1]}")
        d = pairs[:, 1] - pairs[:, 0]
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
        wins = int((d > 0).sum() if higher_is_better(metric) else (d < 0).sum())
        mean_a, mean_b = (float(x) for x in pairs.mean(axis=0))
        results.append(MetricComparison(metric, len(d), mean_a, mean_b, float(d.mean()), se, wins))
    return results


def describe(record: dict) -> str:
    """The model an evaluation scored (relight: the forward model and the inverse one that fed it)."""
    inverse = record.get("inverse_model")
    model = str(record.get("model", "?"))
    return f"{model} (inverse: {inverse})" if inverse and inverse != model else model


def format_table(comparisons: Sequence[MetricComparison]) -> str:
    """A plain-text table, one metric per line."""
    width = max(len("metric"), *(len(c.metric) for c in comparisons))
    lines = [f"{'metric':<{width}}  {'n':>4}  {'A':>9}  {'B':>9}  {'B - A':>9}  {'± SE':>7}  {'z':>6}  verdict"]
    for c in comparisons:
        lines.append(
            f"{c.metric:<{width}}  {c.count:>4}  {c.mean_a:>9.4g}  {c.mean_b:>9.4g}  {c.difference:>+9.3g}  "
            f"{c.standard_error:>7.2g}  {c.z:>+6.1f}  {c.verdict} ({c.wins_b}/{c.count} clips B)"
        )
    return "\n".join(lines)
