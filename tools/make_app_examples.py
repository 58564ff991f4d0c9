"""Rebuild the application examples: the bundled vase mesh and saucer mask, and the README's figures.

Usage: python tools/make_app_examples.py [--model tiny] [--out /tmp/app_examples]

Runs the README's ``edit`` and ``insert`` commands with the given model and writes one compact figure per
application to ``examples/results/`` (input, selection, edited G-buffer, render before, render after), and one of
``relight --light-strength`` (input, then each map as given and with ``auto``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from diffusion_renderer.cli.main import main as cli
from diffusion_renderer.io.contact_sheet import save_contact_sheet
from diffusion_renderer.io.gbuffer_files import read_gbuffer_frame
from diffusion_renderer.io.images import read_image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
LIGHT = "sunny_vondelpark"


def make_vase(path: Path) -> None:
    """A revolved vase (1 unit tall, +y up) with a glazed-blue glTF metallic-roughness material."""
    import trimesh
    from trimesh.visual.material import PBRMaterial

    t = np.linspace(0.0, 1.0, 40)
    radius = 0.18 + 0.22 * np.sin(np.pi * t * 1.1) ** 2 * (1 - 0.5 * t) + 0.05 * t
    profile = np.vstack([[0.0, 0.0], np.column_stack([radius, t]), [0.0, 1.0]])
    vase = trimesh.creation.revolve(profile, sections=64)  # about +z
    vase.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # +z -> +y
    material = PBRMaterial(name="glaze", baseColorFactor=[40, 90, 200, 255], roughnessFactor=0.2, metallicFactor=0.0)
    vase.visual = trimesh.visual.TextureVisuals(material=material)
    vase.export(path)


def make_saucer_mask(path: Path) -> None:
    """An ellipse over the saucer (and cup) of examples/coffee.png (600 x 400)."""
    y, x = np.mgrid[:400, :600]
    inside = ((x - 280) / 205.0) ** 2 + ((y - 230) / 160.0) ** 2 <= 1.0
    Image.fromarray((inside * 255).astype(np.uint8)).save(path, optimize=True)


def figure(out: Path, clip: str, tag: str, passes: tuple[str, ...], target: Path) -> None:
    """One row: input, mask, each pass edited, render before, render after."""
    edited = out / "gbuffer_frames" / f"{clip}_{tag}"
    tiles = [("input", read_image(EXAMPLES / f"{clip}.png"))]
    tiles.append(
        ("selection" if tag == "edited" else "object", read_gbuffer_frame(edited / "0000.0000.mask.png", "rgb"))
    )
    for key in passes:
        value = read_gbuffer_frame(edited / f"0000.0000.{key}.png", key)
        tiles.append(
            (f"{key} (edited)", (value + 1) / 2 if key == "normal" else np.repeat(value, 3 // value.shape[-1], -1))
        )
    tiles.append((f"before ({LIGHT})", read_image(out / clip / f"0000.0000.{LIGHT}.png")))
    tiles.append((f"after ({LIGHT})", read_image(out / f"{clip}_{tag}" / f"0000.0000.{LIGHT}.png")))
    png = save_contact_sheet(target.with_suffix(".png"), [("", tiles)], tile_height=200)
    Image.open(png).convert("RGB").save(target, quality=88, optimize=True)
    png.unlink()


def light_strength_figure(out: Path, model: str, target: Path) -> None:
    """One row: the input, then per map the relit frame as given and with ``--light-strength auto``."""
    lights = ("street_lamp", LIGHT)
    common = ["--model", model, "--envmap", *lights, "--quiet", "--overwrite", "--no-contact-sheet"]
    for strength in ("1", "auto"):
        cli(["relight", str(EXAMPLES / "coffee.png"), "--out", str(out), "--light-strength", strength, *common])
    factors = json.loads((out / "coffee.light_strength.json").read_text())
    tiles = [("input", read_image(EXAMPLES / "coffee.png"))]
    for light in lights:
        tiles.append((f"{light}, as given", read_image(out / "coffee" / f"0000.0000.{light}.png")))
        auto = f"{light}_auto"
        tiles.append((f"{light}, auto (x{factors[auto]:.2g})", read_image(out / "coffee" / f"0000.0000.{auto}.png")))
    png = save_contact_sheet(target.with_suffix(".png"), [("", tiles)], tile_height=200)
    Image.open(png).convert("RGB").save(target, quality=88, optimize=True)
    png.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", type=Path, default=Path("/tmp/app_examples"))
    args = parser.parse_args()
    make_vase(EXAMPLES / "vase.glb")
    make_saucer_mask(EXAMPLES / "coffee_saucer_mask.png")
    results = EXAMPLES / "results"
    results.mkdir(exist_ok=True)
    common = ["--model", args.model, "--envmap", LIGHT, "--quiet", "--overwrite"]
    edit = ["--mask", EXAMPLES / "coffee_saucer_mask.png", "--basecolor", "#d4af37", "--metallic", "1"]
    cli(
        [
            "edit",
            str(EXAMPLES / "coffee.png"),
            "--out",
            str(args.out / "edit"),
            *map(str, edit),
            "--roughness",
            "0.2",
            *common,
        ]
    )
    figure(args.out / "edit", "coffee", "edited", ("basecolor", "metallic"), results / "edit_coffee.jpg")
    insert = ["--object", EXAMPLES / "vase.glb", "--at", 505, 250, "--scale", 0.3]
    cli(["insert", str(EXAMPLES / "coffee.png"), "--out", str(args.out / "insert"), *map(str, insert), *common])
    figure(args.out / "insert", "coffee", "inserted", ("basecolor", "normal"), results / "insert_coffee.jpg")
    light_strength_figure(args.out / "relight", args.model, results / "light_strength_coffee.jpg")
    print(f"figures in {results}")


if __name__ == "__main__":
    main()
