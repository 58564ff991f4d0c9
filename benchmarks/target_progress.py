"""How far are the shipped `tiny` models from issue 5's targets, and how fast have they been closing the gap?

Each shipped model is a point: its training so far (GPU minutes, as its model card and ``TINY_HISTORY.md`` add them
up) against its figures on the evaluation set (30 clips under held-out maps), read from
``results/eval_tiny_cpu.json`` by key, so that this script holds no evaluation figure of its own. Four panels: the
forward model (PSNR from ground-truth G-buffers), relighting (inverse then forward; against the two models' minutes
added), and the inverse model (normal error and basecolor si-PSNR), with the targets drawn in.

Per panel it fits the figure against log2(minutes) over the models since ``SINCE`` (the forward model's current
family: the residual model with a shading hint, run 29 on; the inverse panels take every inverse model) and writes
the slope (per doubling of the training) and where that line meets the target. A slope is what the recent sessions
bought with minutes *and* with the method changes shipped beside them (new hints, the exposure normalisation, the
lit streets), so the crossing is an estimate of the effort left at the recent pace, not a promise.
``doublings_needed``: how many times the training so far must double to reach the target on that line; None where
the slope is not toward it, and the minutes None beyond ``MAX_DOUBLINGS`` (a flat line's crossing is no number of
minutes anyone will spend).

Usage: python benchmarks/target_progress.py --out benchmarks/results/target_progress.json (also writes ``.png``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusion_renderer import __version__
from diffusion_renderer.io.atomic import atomic_file

RESULTS = Path(__file__).parent / "results"
EVALUATION = RESULTS / "eval_tiny_cpu.json"


@dataclass(frozen=True)
class Milestone:
    """A shipped pair: its cumulative training minutes per role and where its figures are in ``eval_tiny_cpu.json``
    (dotted keys to an evaluation record; None where that mode was not measured for this pair)."""

    forward_run: str
    inverse_run: str
    forward_minutes: float
    inverse_minutes: float
    forward: str | None
    relight: str | None
    inverse: str | None = None


# Minutes: the totals written when each was shipped (TINY_HISTORY.md "In all ... trained ... minutes"; the model
# card's "Totals"); runs 35-42 add their own calls' minutes (train_small_h100.json "minutes") to run 31's 75.0.
MILESTONES: tuple[Milestone, ...] = (
    Milestone("run 10", "run 10", 0.0, 37.0, None, None, "results.inverse_run10_float16_seed1000"),
    Milestone(
        "run 17",
        "run 18",
        30.5,
        43.0,
        "previous_tiny_run17_run18.forward_tiny",
        "previous_tiny_run17_run18.relight_tiny",
        "previous_tiny_run17_run18.inverse_tiny",
    ),
    Milestone(
        "run 22",
        "run 18",
        37.3,
        43.0,
        "previous_tiny_run22_run18.forward_tiny",
        "previous_tiny_run22_run18.relight_tiny",
    ),
    Milestone(
        "run 23",
        "run 25",
        47.1,
        54.4,
        "previous_tiny_run23_run25.forward_tiny",
        "previous_tiny_run23_run25.relight_tiny",
        "previous_tiny_run23_run25.inverse_tiny",
    ),
    Milestone(
        "runs 23+26",
        "runs 25+27",
        54.4,
        59.5,
        "previous_tiny_avg23_26_avg25_27.forward_tiny",
        "previous_tiny_avg23_26_avg25_27.relight_tiny",
        "previous_tiny_avg23_26_avg25_27.inverse_tiny",
    ),
    Milestone(
        "run 29",
        "runs 25+27, 28",
        64.4,
        72.7,
        "previous_tiny_run29.forward_tiny",
        "previous_tiny_run29.relight_tiny",
        "previous_tiny_inverse_run28.inverse_tiny",
    ),
    Milestone(
        "run 31", "runs 25+27, 28", 75.0, 72.7, "previous_tiny_run31.forward_tiny", "previous_tiny_run31.relight_tiny"
    ),
    Milestone(
        "run 35", "runs 25+27, 28", 86.1, 72.7, "previous_tiny_run35.forward_tiny", "previous_tiny_run35.relight_tiny"
    ),
    Milestone(
        "run 36", "runs 25+27, 28", 91.7, 72.7, "previous_tiny_run36.forward_tiny", "previous_tiny_run36.relight_tiny"
    ),
    Milestone(
        "run 37",
        "runs 25+27, 28",
        102.7,
        72.7,
        "previous_tiny_run37_basecolor_detail.forward_tiny",
        "previous_tiny_run37_basecolor_detail.relight_tiny",
    ),
    Milestone(
        "run 41", "runs 25+27, 28", 113.7, 72.7, "previous_tiny_run41.forward_tiny", "previous_tiny_run41.relight_tiny"
    ),
    # relighting as measured when run 42 shipped, with fitted shadows like every milestone before it (the default
    # since the fifteenth session leaves them out for predicted G-buffers: 16.92 against 16.85 dB)
    Milestone(
        "run 42",
        "runs 25+27, 28",
        129.9,
        72.7,
        "previous_tiny_run42.forward_tiny",
        "previous_tiny_run42.relight_tiny_fitted_shadows",
    ),
    # the mean of run 44 and run 42 given version 5 hints; relighting without fitted shadows (the default now)
    Milestone(
        "run 44",
        "runs 25+27, 28",
        146.2,
        72.7,
        "previous_tiny_run44_cubemap.forward_tiny",
        "previous_tiny_run44_cubemap.relight_tiny",
    ),
    # the same weights with the lighting projected by area (the default from the seventeenth session): no training
    Milestone(
        "run 44, area",
        "runs 25+27, 28",
        146.2,
        72.7,
        "previous_tiny_run44_area.forward_tiny",
        "previous_tiny_run44_area.relight_tiny",
    ),
    # trained on from it: 2,036 steps on area-projected clips with four more training maps (one call)
    Milestone(
        "run 45", "runs 25+27, 28", 151.2, 72.7, "previous_tiny_run45.forward_tiny", "previous_tiny_run45.relight_tiny"
    ),
    # run 45 trained on for 4,573 steps in two calls (run 46), averaged with run 45
    Milestone(
        "runs 45+46",
        "runs 25+27, 28",
        161.6,
        72.7,
        "previous_tiny_run4546.forward_tiny",
        "previous_tiny_run4546.relight_tiny",
    ),
    # that mean trained on for 5,297 steps in two calls on two machines (runs 47, 48), averaged with it
    Milestone(
        "run 48", "runs 25+27, 28", 173.2, 72.7, "results.forward_tiny", "previous_tiny_inverse_run28.relight_tiny"
    ),
    # the inverse trained on for 2,554 steps with the loss weighted off the frame's dominant surface (run 50),
    # averaged with it; the forward file unchanged (its point is the milestone above's)
    Milestone(
        "run 48",
        "runs 25+27, 28, 50",
        173.2,
        78.7,
        None,
        "previous_tiny_inverse_run50.relight_tiny",
        "previous_tiny_inverse_run50.inverse_tiny",
    ),
    # that inverse trained on for 7,500 steps in three calls with the same weighting (run 51), averaged with it
    Milestone(
        "run 48",
        "runs 25+27, 28, 50, 51",
        173.2,
        94.6,
        None,
        "previous_tiny_inverse_run51.relight_tiny",
        "previous_tiny_inverse_run51.inverse_tiny",
    ),
    # that inverse trained on for 6,038 steps in two calls with the same weighting (run 52), averaged with it
    Milestone(
        "run 48",
        "runs 25+27, 28, 50, 51, 52",
        173.2,
        107.0,
        None,
        "previous_tiny_inverse_run52.relight_tiny",
        "previous_tiny_inverse_run52.inverse_tiny",
    ),
    # that inverse trained on for 7,500 steps in three calls with the same weighting (run 53), averaged with it
    Milestone(
        "run 48",
        "runs 25+27, 28, 50, 51, 52, 53",
        173.2,
        123.1,
        None,
        "previous_tiny_inverse_run53.relight_tiny",
        "previous_tiny_inverse_run53.inverse_tiny",
    ),
    # that inverse trained on for 6,451 steps in two calls with the same weighting (run 54), averaged with it
    Milestone(
        "run 48",
        "runs 25+27, 28, 50, 51, 52, 53, 54",
        173.2,
        135.6,
        None,
        "previous_tiny_inverse_run54.relight_tiny",
        "previous_tiny_inverse_run54.inverse_tiny",
    ),
    # that inverse trained on for 7,500 steps in three calls on shards without hints (run 55), averaged with it
    Milestone(
        "run 48",
        "runs 25+27, 28, 50, 51, 52, 53, 54, 55",
        173.2,
        149.7,
        None,
        "previous_tiny_inverse_run55.relight_tiny",
        "previous_tiny_inverse_run55.inverse_tiny",
    ),
    # that inverse trained on for 6,387 steps in two calls on shards without hints (run 56), averaged with it
    Milestone(
        "run 48",
        "runs 25+27, 28, 50, 51, 52, 53, 54, 55, 56",
        173.2,
        162.3,
        None,
        "results.relight_tiny",
        "results.inverse_tiny",
    ),
)
# Inverse runs trained from a shipped inverse and not shipped alone: what more minutes gave it.
TRIED_INVERSE: tuple[tuple[str, float, str], ...] = (
    ("run 30", 72.7 + 17.5, "results.inverse_run30_int8"),
    ("run 43", 72.7 + 17.4, "results.inverse_run43_int8_one_sample"),
    ("run 51", 78.7 + 15.9, "results.inverse_run51_one_sample"),  # from the mean with run 50
    ("run 52", 94.6 + 12.4, "results.inverse_run52_one_sample"),  # from the mean with run 51
    ("run 53", 107.0 + 16.1, "results.inverse_run53_one_sample"),  # from the mean with run 52
    ("run 54", 123.1 + 12.5, "results.inverse_run54_one_sample"),  # from the mean with run 53
    ("run 55", 135.6 + 14.1, "results.inverse_run55_one_sample"),  # from the mean with run 54
    ("run 56", 149.7 + 12.6, "results.inverse_run56_one_sample"),  # from the mean with run 55
)
# The shipped inverse model with its defaults (an ensemble of 2 shifted samples, the basecolor detail): inference
# settings chosen after its last training, drawn beside the trend of the one-sample figures.
SHIPPED_DEFAULTS = "results.inverse_tiny_by_region"
TARGETS = {"forward": 28.0, "relight": 25.0, "normal_angle_mean": 10.0, "basecolor_si_psnr": 25.0}
SINCE = 64.4  # forward minutes: fits use the models from run 29 on (the residual model with a shading hint)
MAX_DOUBLINGS = 20.0  # beyond a million times the training so far, no minutes are given
SINCE_INVERSE = 0.0  # inverse minutes: every shipped inverse model (all one sample, without the basecolor detail)


def lookup(tree: Mapping, dotted: str, metric: str) -> float:
    """``tree[a][b]...["mean"][metric]`` for ``dotted`` = "a.b..."; KeyError naming the key if it is missing."""
    node = tree
    for part in dotted.split("."):
        if part not in node:
            raise KeyError(f"{EVALUATION.name} has no {dotted!r}")
        node = node[part]
    return float(node["mean"][metric])


def log2_fit(minutes: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope per doubling) of the least-squares line ``value = a + b * log2(minutes)``."""
    slope, intercept = np.polyfit(np.log2(np.asarray(minutes, dtype=np.float64)), np.asarray(values), 1)
    return float(intercept), float(slope)


def crossing_log2_minutes(intercept: float, slope: float, target: float, higher_is_better: bool) -> float | None:
    """log2 of the minutes at which the fitted line meets ``target`` (log2, as a flat line's crossing overflows any
    float); None if the line does not move toward it."""
    if slope == 0 or (slope > 0) != higher_is_better:
        return None
    return (target - intercept) / slope


def series(tree: Mapping, milestones: Sequence[Milestone], mode: str, metric: str) -> list[dict]:
    """[{label, forward_minutes, inverse_minutes, value}] of the milestones that measured ``mode``."""
    points = []
    for m in milestones:
        key = getattr(m, mode)
        if key is not None:
            label = {"forward": m.forward_run, "inverse": m.inverse_run}.get(
                mode, f"{m.forward_run} / {m.inverse_run}"
            )
            points.append(
                {"label": label, "forward_minutes": m.forward_minutes, "inverse_minutes": m.inverse_minutes}
                | {"value": lookup(tree, key, metric), "key": key}
            )
    return points


def trend(points: Sequence[dict], x_key: str, target: float, higher_is_better: bool, since: float) -> dict:
    """The log2 fit over the points at or after ``since`` (on ``x_key``), and how far its line puts the target from
    the last shipped one (a point without ``shipped`` is shipped): a run tried after it and not shipped is on the
    line, but the gap is what the package has."""
    recent = [p for p in points if p[x_key] >= since]
    intercept, slope = log2_fit([p[x_key] for p in recent], [p["value"] for p in recent])
    cross = crossing_log2_minutes(intercept, slope, target, higher_is_better)
    last = [p for p in recent if p.get("shipped", True)][-1]
    gap = (target - last["value"]) * (1 if higher_is_better else -1)
    if gap <= 0:  # a target the last model meets is met whatever the line says (the points scatter about it)
        doublings, minutes = 0.0, last[x_key]
    else:
        doublings = None if cross is None else max(cross - math.log2(last[x_key]), 0.0)
        minutes = None if doublings is None or doublings > MAX_DOUBLINGS else 2.0**cross
    return {
        "fitted_on": [p["label"] for p in recent],
        "fitted_from_minutes": recent[0][x_key],
        "last_point": last["label"],
        "intercept": intercept,
        "slope_per_doubling": slope,
        "target": target,
        "last": last["value"],
        "gap": gap,
        "met": gap <= 0,
        "doublings_needed": doublings,
        "target_at_minutes": minutes,
        "minutes_left": None if minutes is None else max(minutes - last[x_key], 0.0),
    }


def inverse_points(tree: Mapping, metric: str) -> list[dict]:
    """The shipped inverse models and those trained on from the last one and not shipped (``shipped`` False), in
    order of their minutes: more training that did not ship is still what more training gave."""
    points = [p | {"shipped": True} for p in series(tree, MILESTONES, "inverse", metric)]
    points += [
        {"label": label, "inverse_minutes": minutes, "value": lookup(tree, key, metric), "key": key, "shipped": False}
        for label, minutes, key in TRIED_INVERSE
    ]
    return sorted(points, key=lambda p: p["inverse_minutes"])


def progress(tree: Mapping, since: float = SINCE) -> dict:
    """Every panel's points and trend, as written to the JSON."""
    forward = series(tree, MILESTONES, "forward", "psnr")
    relight = series(tree, MILESTONES, "relight", "psnr")
    for p in relight:  # both models' training buys relighting
        p["total_minutes"] = p["forward_minutes"] + p["inverse_minutes"]
    since_total = next(p["total_minutes"] for p in relight if p["forward_minutes"] >= since)
    result = {
        "forward": {"points": forward, "trend": trend(forward, "forward_minutes", TARGETS["forward"], True, since)},
        "relight": {
            "points": relight,
            "trend": trend(relight, "total_minutes", TARGETS["relight"], True, since_total),
        },
    }
    for metric, higher_is_better in (("normal_angle_mean", False), ("basecolor_si_psnr", True)):
        points = inverse_points(tree, metric)
        fit = trend(points, "inverse_minutes", TARGETS[metric], higher_is_better, SINCE_INVERSE)
        result[metric] = {"points": points, "trend": fit, "shipped_defaults": lookup(tree, SHIPPED_DEFAULTS, metric)}
    return result


def plot(result: Mapping, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("forward", "forward_minutes", "forward PSNR (dB)", "forward model's training (GPU minutes)"),
        ("relight", "total_minutes", "relight PSNR (dB)", "both models' training (GPU minutes)"),
        ("normal_angle_mean", "inverse_minutes", "normal mean error (°)", "inverse model's training (GPU minutes)"),
        ("basecolor_si_psnr", "inverse_minutes", "basecolor si-PSNR (dB)", "inverse model's training (GPU minutes)"),
    )
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, (name, x_key, ylabel, xlabel) in zip(axes, panels, strict=True):
        points, fit = result[name]["points"], result[name]["trend"]
        shipped = [p for p in points if p.get("shipped", True)]
        ax.plot([p[x_key] for p in shipped], [p["value"] for p in shipped], "o-", color="tab:blue", label="shipped")
        for p in shipped[-1:]:
            ax.annotate(p["label"], (p[x_key], p["value"]), textcoords="offset points", xytext=(4, -12), fontsize=8)
        tried = [p for p in points if not p.get("shipped", True)]
        if tried:
            ax.plot([p[x_key] for p in tried], [p["value"] for p in tried], "x", color="tab:red", label="not shipped")
        if "shipped_defaults" in result[name]:
            ax.plot(shipped[-1][x_key], result[name]["shipped_defaults"], "*", ms=10, color="tab:orange")
            ax.annotate("its defaults", (shipped[-1][x_key], result[name]["shipped_defaults"]), fontsize=7)
        ax.axhline(fit["target"], color="tab:green", linestyle="--", label="target")
        line_x = np.geomspace(fit["fitted_from_minutes"], max(p[x_key] for p in points) * 4, 50)
        fitted = fit["intercept"] + fit["slope_per_doubling"] * np.log2(line_x)
        ax.plot(line_x, fitted, ":", color="gray", label=f"fit from {fit['fitted_on'][0]}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("tiny against issue 5's targets (evaluation set, held-out maps)")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "target_progress.json")
    args = parser.parse_args()
    try:
        result = progress(json.loads(EVALUATION.read_text()))
    except KeyError as error:  # a milestone whose evaluation was renamed or not yet recorded: one line, no traceback
        raise SystemExit(f"target_progress: error: {error.args[0]}") from None
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": EVALUATION.name,
        "device": f"CPU ({platform.processor() or platform.machine()}; reads results only)",
        "versions": {"diffusion_renderer": __version__, "numpy": np.__version__, "python": platform.python_version()},
        "fit_since_forward_minutes": SINCE,
        "note": __doc__.split("\n\n")[2].replace("\n", " "),
    } | result
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    plot(result, args.out.with_suffix(".png"))
    for name in ("forward", "relight", "normal_angle_mean", "basecolor_si_psnr"):
        fit = result[name]["trend"]
        doublings = "never" if fit["doublings_needed"] is None else f"{fit['doublings_needed']:.1f}"
        where = "the target met" if fit["met"] else f"the target {doublings} doublings away"
        print(
            f"{name}: {fit['last']:.2f} (target {fit['target']}), {fit['slope_per_doubling']:+.2f} per doubling of "
            f"the training since {fit['fitted_on'][0]}: {where}"
        )


if __name__ == "__main__":
    main()
