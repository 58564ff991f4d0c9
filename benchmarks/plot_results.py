"""Bar charts of a benchmark results JSON as a PNG: time and peak memory per run.

Reads ``{"results": {name: {"seconds", "peak_gib"}}}`` (pipelines_gpu.py), the ``dit`` / ``vae`` / ``pipeline``
sections of ``diffusion-renderer bench`` and the ``runs`` of train_throughput.py (seconds per training step).
Several files make one chart (a later file's run replaces an earlier run of the same name). Drawn with Pillow
(already a dependency) so that no plotting library is needed.

Usage: python benchmarks/plot_results.py results/pipelines_gpu_h100.json [more.json ...] [--out results/X.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROW, LABEL, BAR, PAD = 26, 380, 300, 16
COLOURS = {"seconds": (70, 130, 200), "peak_gib": (220, 120, 60)}
TITLES = {"seconds": "wall time (s)", "peak_gib": "peak GPU memory (GiB)"}


def chart_rows(record: dict) -> dict[str, dict[str, float]]:
    """{run name: {"seconds", "peak_gib"}} of either results format (module doc)."""
    if "results" in record:
        return {name: r for name, r in record["results"].items() if "seconds" in r}
    rows = {}
    for variant, runs in record.get("dit", {}).items():
        for case, r in runs.items():
            if "seconds" in r:
                rows[f"DiT step {case} {variant}"] = r
    for size, runs in record.get("vae", {}).items():
        for stream, r in runs.items():
            for op in ("encode", "decode"):
                rows[f"tokenizer {op} {size} {stream}"] = {"seconds": r[f"{op}_s"], "peak_gib": r[f"{op}_peak_gib"]}
    settings = record.get("settings", {})
    for r in record.get("runs", []):  # train_throughput.py: one training step per variant and batch size
        name = f"train step {settings.get('role', '')} {r['variant']} batch {r['batch_size']}"
        rows[name] = {"seconds": r["step_ms"] / 1000, "peak_gib": r.get("peak_memory_gb", 0.0) * 1e9 / 2**30}
    pipeline = record.get("pipeline", {})
    for name, r in pipeline.items():
        if isinstance(r, dict) and "seconds" in r:
            rows[f"{name} ({pipeline.get('variant', '')}, {r.get('frames', '')} frames)"] = r
    return rows


def draw_chart(records: list[dict]) -> Image.Image:
    rows = {name: r for record in records for name, r in chart_rows(record).items()}
    record = records[0]
    keys = ("seconds", "peak_gib")
    width = LABEL + len(keys) * (BAR + 90) + PAD
    height = 3 * ROW + len(rows) * ROW + PAD
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    torch_version = record.get("torch") or record.get("versions", {}).get("torch", "")
    title = f"{record.get('benchmark', 'bench')} - {record.get('device', '')}, torch {torch_version}"
    draw.text((PAD, PAD // 2), title, fill="black", font=font)
    for k, key in enumerate(keys):
        left = LABEL + k * (BAR + 90)
        draw.text((left, ROW + 4), TITLES[key], fill="black", font=font)
        top = max(r[key] for r in rows.values()) or 1.0
        for i, r in enumerate(rows.values()):
            y = 2 * ROW + i * ROW + 4
            length = int(BAR * r[key] / top)
            draw.rectangle((left, y, left + max(length, 1), y + ROW - 10), fill=COLOURS[key])
            draw.text((left + length + 6, y + 2), f"{r[key]:.3g}", fill="black", font=font)
    for i, name in enumerate(rows):
        draw.text((PAD, 2 * ROW + i * ROW + 6), name.replace("_", " "), fill="black", font=font)
    return image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=None, help="default: the first file's name with .png")
    args = parser.parse_args()
    out = args.out or args.results[0].with_suffix(".png")
    draw_chart([json.loads(path.read_text()) for path in args.results]).save(out)
    print(out)


if __name__ == "__main__":
    main()
