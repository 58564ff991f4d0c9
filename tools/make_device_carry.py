"""Pack Mitsuba + Dr.Jit for a GPU training call: the site folder of the cp312 wheels, trimmed to the CUDA variant and
to the plugins that the data engine loads, as one ``tar.xz`` to carry:

    pip download --no-deps --only-binary :all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
        mitsuba==3.9.1 drjit==1.5.0 -d /tmp/whl
    python tools/make_device_carry.py /tmp/whl --out .carry/mitsuba_cuda_site.tar.xz [--train-hdri-dir DIR]

Why trim: what a device call carries, with the working tree, is capped at 64 MiB. The wheels hold every variant and
~100 plugins (87 MB of plugin libraries unpacked); the data engine loads 17 of them. Which ones is measured, not
only listed: a subprocess renders a few clips through ``make_dataset`` as ``benchmarks/train_small_gpu.py`` does
(CPU variant, small frames, every light family, the training maps if given) and reads the plugin libraries mapped
into it from ``/proc/self/maps``. Plugin names are the same in every variant, so the CUDA variant needs the same
set. Kept besides: every plugin type that ``data/mitsuba_render.py`` names (scene kinds the clips did not draw),
the core libraries, ``scalar_rgb`` (kept by the earlier hand-made carry too) and ``data/``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from diffusion_renderer.io.atomic import atomic_file

HERE = Path(__file__).resolve().parent
DROPPED_DIRS = ("mitsuba/include", "drjit/include", "mitsuba/python/test")

# Run in a fresh interpreter so that only this render's libraries are mapped.
_DISCOVER = """
import json, re, sys
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
from data_engine import use_mitsuba_hdr_reader
from diffusion_renderer.data.make_data import make_dataset
use_mitsuba_hdr_reader()
common = dict(frames=2, resolution=32, variant="cpu", spp=1, layout="shards", val_fraction=0.25, progress=False)
make_dataset(Path({out!r}), scenes={val_scenes}, seed=900_000, only_split="val", **common)
make_dataset(Path({out!r}), scenes={scenes}, seed={seed}, only_split="train", train_hdri_dir={maps}, **common)
maps = Path("/proc/self/maps").read_text()
print(json.dumps(sorted(set(re.findall(r"/mitsuba/plugins/([A-Za-z0-9_]+)[.]so", maps)))))
"""


def discover_plugins(scenes: int, train_hdri_dir: Path | None, seed: int = 250_000) -> list[str]:
    """Names of the Mitsuba plugins that rendering ``scenes`` training clips (and a third as many held-out ones)
    loads, measured in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        maps = f"Path({str(train_hdri_dir)!r})" if train_hdri_dir else "None"
        code = _DISCOVER.format(
            benchmarks=str(HERE.parent / "benchmarks"),
            out=tmp,
            scenes=scenes,
            val_scenes=max(1, scenes // 3),
            seed=seed,
            maps=maps,
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        sys.exit(f"finding the plugins: rendering clips on the CPU failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def referenced_plugins() -> set[str]:
    """The plugin types that the scene builder names in its code: kept even if no discovery clip used them."""
    from diffusion_renderer.data import mitsuba_render

    return set(re.findall(r'"type": "([a-z_]+)"', Path(mitsuba_render.__file__).read_text()))


def is_kept(name: str, variant: str, plugins: set[str]) -> bool:
    """Whether a wheel member (a path inside site-packages) goes into the carry."""
    if any(name == d or name.startswith(d + "/") for d in DROPPED_DIRS):
        return False
    plugin = re.fullmatch(r"mitsuba/plugins/([A-Za-z0-9_]+)\.so", name)
    if plugin:
        return plugin.group(1) in plugins
    module = re.fullmatch(r"mitsuba/((?:scalar|llvm|cuda)_[A-Za-z0-9_]+)\.cpython-[^/]+\.so", name)
    if module:  # variant modules: the one that runs there + scalar_rgb
        return module.group(1) in (variant, "scalar_rgb")
    return True


def pack_site(wheels: list[Path], out: Path, variant: str, plugins: set[str]) -> dict[str, int]:
    """Unpack the kept members of ``wheels`` into one site folder and write it to ``out`` as tar.xz (atomically)."""
    counts = {"kept": 0, "dropped": 0, "kept_bytes": 0}
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    if not is_kept(info.filename, variant, plugins):
                        counts["dropped"] += 1
                        continue
                    archive.extract(info, site)
                    mode = info.external_attr >> 16
                    if mode:
                        (site / info.filename).chmod(mode & 0o777)
                    counts["kept"] += 1
                    counts["kept_bytes"] += info.file_size
        with atomic_file(out) as part, tarfile.open(part, "w:xz", preset=6) as tar:
            for member in sorted(site.iterdir()):
                tar.add(member, arcname=member.name)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", type=Path, help="folder with the cp312 mitsuba and drjit wheels")
    parser.add_argument("--out", type=Path, required=True, help="the tar.xz to write")
    parser.add_argument("--variant", default="cuda_ad_rgb")
    parser.add_argument("--scenes", type=int, default=48, help="training clips rendered to find the plugins")
    parser.add_argument("--train-hdri-dir", type=Path, help="the training maps that the GPU run will use")
    args = parser.parse_args()
    wheels = sorted(p for p in args.wheels.glob("*.whl") if p.name.split("-")[0] in ("mitsuba", "drjit"))
    if sorted(p.name.split("-")[0] for p in wheels) != ["drjit", "mitsuba"]:
        sys.exit(f"{args.wheels}: needs one mitsuba and one drjit wheel, found {[p.name for p in wheels]}")
    plugins = discover_plugins(args.scenes, args.train_hdri_dir)
    print(f"plugins loaded by the data engine ({len(plugins)}): {' '.join(plugins)}", file=sys.stderr)
    counts = pack_site(wheels, args.out, args.variant, set(plugins) | referenced_plugins())
    size = args.out.stat().st_size / 1e6
    print(
        f"{args.out}: {size:.1f} MB ({counts['kept']} files, {counts['kept_bytes'] / 1e6:.0f} MB unpacked; "
        f"{counts['dropped']} dropped)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
