"""Does a held-out map's light from below the horizon make the forward model's frames too dark? The shipped forward
model darkens scenes lit by the bundled ``street_lamp`` map by about half a stop more than its split-sum hint does
(``correction_strength.py``). That map's lamp is overhead, but 9 % of its power is the lit street below the horizon.
This renders the same scenes under three versions of one map and measures the model's exposure error on each:

- ``as_is``: the map file;
- ``no_ground``: every texel below the horizon black (the ground's light removed);
- ``flat_ground``: every texel below the horizon at the ground's mean radiance (its power kept, its pattern gone).

The scenes are the validation clips of ``make-data --hdri-dir DIR --val-fraction 1 --only-split val`` with DIR
holding only that version (so the clips, cameras and map rotations are the same across versions; some clips draw the
analytic sun and sky instead and score the same in all three). Each version's truth is path traced under it, so the
exposure gain the model needs is measured against its own truth. Where ``no_ground`` brings the model's gain to its
hint's, the ground is why; where ``flat_ground`` does as well, its power is, else its pattern.

Usage: python benchmarks/ground_light.py --work /tmp/ground --out results/correction_strength_ground_cpu.json
[--map street_lamp] [--scenes 80] [--seed 997000] [--spp 128] [--model tiny]. Rendering is resumable (make-data);
about 1.5 min per version for 80 scenes and 1 min of model time per version on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from correction_strength import measure, residual_pipe, write_record
from diffusion_renderer.data.make_data import make_dataset
from diffusion_renderer.eval.evaluate import list_eval_clips
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.hdr import read_hdr, write_hdr
from diffusion_renderer.lighting.presets import resolve_envmap
from diffusion_renderer.render.splitsum import equirect_solid_angles


def below_horizon(height: int) -> np.ndarray:
    """(H,) bool: the equirect rows whose texel centres lie below the horizon (row 0 is the zenith)."""
    return (np.arange(height) + 0.5) / height > 0.5


def ground_versions(equirect: np.ndarray) -> dict[str, np.ndarray]:
    """The three versions of a (H, W, 3) world-frame equirect map (see the module doc). ``flat_ground`` keeps the
    ground's power: its constant is the mean radiance of the texels below the horizon, weighted by their solid
    angles."""
    height, width = equirect.shape[:2]
    below = below_horizon(height)
    texel_sr = equirect_solid_angles(height, width, dtype=torch.float64).numpy()[below][..., None]  # (Hb, 1, 1)
    ground = equirect[below].astype(np.float64)  # (Hb, W, 3)
    mean = (ground * texel_sr).sum((0, 1)) / (texel_sr.sum() * width)  # (3,)
    no_ground, flat_ground = equirect.copy(), equirect.copy()
    no_ground[below] = 0.0
    flat_ground[below] = mean.astype(equirect.dtype)
    return {"as_is": equirect, "no_ground": no_ground, "flat_ground": flat_ground}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work",
        type=Path,
        required=True,
        help="folder for the map versions and their datasets, one subfolder per map",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--map", default="street_lamp", help="a bundled preset's name or an .hdr/.exr file")
    parser.add_argument("--scenes", type=int, default=80, help="seeds (every second one is a validation clip)")
    parser.add_argument("--seed", type=int, default=997000)
    parser.add_argument("--spp", type=int, default=128)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    try:
        source = resolve_envmap(args.map)[1]
    except InputError as exc:
        parser.error(str(exc))
    pipe = residual_pipe(args.model, parser)
    splits, labels = {}, {}
    work = args.work / source.stem  # make-data resumes: another map's finished clips must not be taken for these
    for version, equirect in ground_versions(read_hdr(source)).items():
        maps = work / f"maps_{version}"
        maps.mkdir(parents=True, exist_ok=True)
        write_hdr(maps / f"{source.stem}.hdr", equirect)  # the stem is the clips' light name in every version
        data = work / version
        make_dataset(
            data, scenes=args.scenes, seed=args.seed, hdri_dir=maps, spp=args.spp, val_fraction=1.0, only_split="val"
        )
        splits[version], labels[version] = (data, "val"), version
    clips = {item: list_eval_clips(data, split) for item, (data, split) in splits.items()}
    record = measure(pipe, args.model, splits, clips, labels)
    record.update(benchmark="ground_light", map=source.name, scenes=args.scenes, seed=args.seed, spp=args.spp)
    write_record(record, args.out)
    for version, entry in record["sets"].items():
        print(version, entry["summary"].get("exposure"))


if __name__ == "__main__":
    main()
