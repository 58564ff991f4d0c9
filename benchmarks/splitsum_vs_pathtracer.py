"""The split-sum baseline against Mitsuba's path tracer on the same G-buffers and env maps (PSNR, dB).

Usage: python benchmarks/splitsum_vs_pathtracer.py --out results/splitsum_vs_pathtracer.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from diffusion_renderer.eval.baseline_check import baseline_figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--spp", type=int, default=256)
    parser.add_argument("--envmaps", nargs="+", default=["city", "forest", "park", "studio"])
    args = parser.parse_args()
    figures = baseline_figures(tuple(args.envmaps), args.size, args.spp)
    summary = {
        kind: round(float(np.mean([f.psnr_db for f in figures if f.scene == kind])), 2)
        for kind in ("convex", "occluded")
    }
    record = {
        "benchmark": "splitsum_vs_pathtracer",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "variant": "llvm_ad_rgb",
        "resolution": [args.size, args.size],
        "spp": args.spp,
        "mean_psnr_db": summary,
        "figures": [{**asdict(f), "psnr_db": round(f.psnr_db, 2)} for f in figures],
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
