"""Seeded procedural scenes for the data engine: a few textured PBR primitives on a ground plane under an HDRI.

In the spirit of DiffusionRenderer's synthetic data (random objects, random PBR materials, random HDR lighting,
random cameras and motions), but procedural so it needs no asset library. Everything is a pure function of the
seed (``numpy.random.default_rng(seed)``): the same seed gives an identical :class:`SceneSpec` (dict equality),
and a spec is JSON-serialisable (``to_dict`` / ``from_dict``) so a stored clip can be regenerated from its meta.

Frames and units
----------------
* World: right-handed, **+y up**, metres. The ground is the plane y = 0 (normal +y); objects rest on it.
* Camera: ``CameraSpec.c2w[t]`` is the 4x4 camera-to-world matrix in the **OpenGL** convention of
  ``conventions.py``: columns are the camera's +x (right), +y (up), +z (backwards: the camera looks along -z)
  and its position. ``fov_deg`` is the **vertical** field of view; pixels are square.
* Lighting: the HDRI is applied as in ``lighting/envmap.py`` (``prepare_hdr``: flip + 180° roll, strength =
  ``intensity``); the world radiance in world direction w at frame t is the prepared map looked up at
  ``latlong_uv(rotate_y(a_t) @ w)`` with ``a_t = radians(LightingSpec.angles_deg()[t])``, so
  ``project_envmap(hdr, H, W, radians(angles), strength=intensity, c2w=c2w[:, :3, :3])`` recomputes the
  forward renderer's environment condition of every frame exactly (see ``mitsuba_render``).
  With probability ``SUNSKY_P`` = 0.2 ``sample_scene`` lights the scene with Mitsuba's analytic ``sunsky``
  instead (``LightingSpec.kind = "sunsky"``: sun elevation 5-70°, azimuth 0-360° measured from +z toward +x,
  turbidity 2-6, sky albedo 0.1-0.5, intensity 0.5-2 x ``SUNSKY_INTENSITY``, base rotation 0). The sky is
  **baked** once per clip into a 256 x 512 equirect HDR in the package's env-map file convention
  (``mitsuba_render.bake_sunsky``; the tiny sun disc is spread over a small Gaussian blob of equal power), and
  that map then stands for the HDRI everywhere: the render uses the same ``envmap`` emitter path, and
  ``environment_hdr`` recomputes the conditions from it, so orientation and rotations behave exactly as for HDRIs.
  Light variations of training clips (``sample_scene(light_augment=True)``), drawn from a generator of their own
  (``default_rng([seed, 1])``) so the rest of a seed's scene is what it was before they existed:
  with probability ``PROCEDURAL_P`` = 0.25 the map is replaced by a **procedural** one (``kind="procedural"``:
  a sky-to-ground gradient and 1-4 Gaussian light lobes of 2-25° at random directions, colour temperatures
  and powers, ``LightingSpec.procedural``, baked by ``mitsuba_render.bake_procedural``), so the lights are not
  limited to a handful of files; else, with probability ``NIGHT_P`` = 0.2, by a procedural **night** map (name
  ``procedural_night``: a dark sky and 2-6 tiny, hot, warm lamps near the horizon, :func:`sample_night`, and with
  probability ``STREET_P`` = 0.6 a street below the horizon lit by them, :func:`lit_street`), the
  light the forward model rendered worst (the held-out street_lamp map, too dark by ~4x); else, with probability
  ``KEY_P`` = 0.25, by a procedural **key-light** map (``procedural_key``: a dim room and 1-3 small, bright studio
  lights, :func:`sample_key`); else, with probability ``AREA_P`` = 0.3, by a procedural **area-light** map
  (``procedural_area``: a sky of any brightness and 1-4 sharp-edged lights of random shapes, :func:`sample_area`);
  with probability
  ``LIGHT_TINT_P`` = 0.7 the map's white point moves to a colour temperature of 3,500-10,000 K (uniform in
  mireds; a unit-luminance gain, ``lighting/white_balance.py``), and with probability 1/2 it is mirrored
  left-right. All are applied to the map itself (``mitsuba_render.read_environment``), so the render and the
  conditions see the same light.
* Textures: basecolour values and texture colours are **sRGB** in [0, 1] (the G-buffer convention); the
  renderer converts them to linear reflectance. With probability ``NORMAL_MAP_P`` = 0.3 a material also gets a
  procedural tangent-space normal map (:class:`NormalMapSpec`: seeded value noise or a grid of round bumps,
  largest tilt ``atan(strength)`` with strength 0.2-0.8; x along +u = Mitsuba's ``dp_du``, y along +v, z the
  shading normal), applied with Mitsuba's ``normalmap`` BSDF wrapper; the ``normal`` G-buffer is then the
  perturbed normal (see ``mitsuba_render``).

Objects
-------
Canonical primitives fit in [-1, 1]³: ``sphere`` (radius 1), ``cube`` ([-1, 1]³), ``cylinder`` (radius 1, axis y,
capped), ``torus`` (radii 0.7 / 0.3 in the xz plane), ``capsule`` (radius 0.5, axis y, height 2),
``rounded_box`` ([-1, 1]³ with edges rounded at radius 0.2, exact normals), ``bumpy_sphere`` (unit sphere displaced
along its normal by seeded low-frequency noise, amplitude 12 %, rescaled to radius <= 1, smooth normals recomputed
from the displaced mesh), ``cone`` (base radius 1 at y = -1, apex y = 1), ``annulus`` (flat ring about +y, radii
0.5 / 1, y in ±0.25) and ``blob`` (a sphere displaced by stronger, lower-frequency noise). Seeded shapes take
their noise from ``ObjectSpec.shape_seed``. ``cone``, ``annulus`` and ``blob`` (TRIMESH_SHAPES) are built with
``trimesh.creation`` (cone, annulus, icosphere) when trimesh is importable, else with numpy fallbacks of the
same canonical frame and bounds; the *choice* of shape never depends on trimesh (all shapes are always in
``SHAPES`` and drawn the same way), only the tessellation does, and ``ObjectSpec.mesh_source`` records which build
placed the object (a spec sampled with trimesh and rendered without it falls back to the numpy mesh, which may
float or sink by a tessellation error of about 1e-3 of the size). Meshes from trimesh get cylindrical or spherical
uvs (with a texture seam). Use :func:`object_mesh` for an object's mesh. An object's
world transform at frame t is ``translate(position + offsets[t]) @ rotation(rotation_deg) @ scale(size)``, with
the rotation ``Rz @ Ry @ Rx`` (x applied first). ``position`` puts the lowest point of the rotated, scaled shape
on the ground, and objects never overlap: their horizontal bounding circles are kept apart in every frame.

Motions (``SceneSpec.motion``; with one frame all of them are static)
----------------------------------------------------------------------
* ``static``: nothing moves.
* ``orbit``: the camera turns about the vertical axis through the look-at target by a total sweep of
  ±30-120° over the clip (linear in time), at constant elevation and distance.
* ``oscillation``: the camera sways: azimuth ``± 5-20°`` and elevation ``± 0-5°`` sinusoidally (one cycle).
* ``light_rotation``: the environment turns about +y by a sweep of ±90-360° over the clip (linear in time;
  a 360° sweep is the official ``--rotate_light``, whose first and last frames coincide).
* ``object_motion``: each object slides on the ground along a straight line (up to 0.6 m end to end, centred
  on its base position), without collisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_renderer.lighting.white_balance import REFERENCE_KELVIN, white_balance_gain

SHAPES = (
    "sphere",
    "cube",
    "cylinder",
    "torus",
    "capsule",
    "rounded_box",
    "bumpy_sphere",
    "cone",
    "annulus",
    "blob",
)
TRIMESH_SHAPES = ("cone", "annulus", "blob")  # built with trimesh when importable, else with numpy fallbacks
SEEDED_SHAPES = ("bumpy_sphere", "blob")  # shapes whose geometry depends on ``ObjectSpec.shape_seed``
NORMAL_MAP_KINDS = ("noise", "bumps")
LIGHTING_KINDS = ("hdri", "sunsky", "procedural")
SUNSKY_P = 0.2  # probability that sample_scene lights a scene with the analytic sun and sky instead of an HDRI
LIGHT_TINT_P = 0.7  # probability that a scene's light gets another colour temperature
PROCEDURAL_P = 0.25  # probability that a training scene's map is a procedural one
PROCEDURAL_LIGHTS = (1, 4)  # light lobes of a procedural map (inclusive)
NIGHT_P = 0.2  # probability that a training scene not given a procedural map gets a procedural night map
NIGHT_LAMPS = (2, 6)  # lamps of a procedural night map (inclusive)
STREET_P = 0.6  # probability that a night map's ground below the horizon is a street lit by its lamps
STREET_POWER = (0.02, 0.25)  # log-uniform: the lit street's power (∫ L dω below the horizon) over the lamps'
KEY_P = 0.25  # probability that a training scene given neither gets a procedural key-light map
KEY_LIGHTS = (1, 3)  # lights of a key-light map: key, fill, rim (inclusive)
AREA_P = 0.3  # probability that a training scene given none of the above gets a procedural area-light map
AREA_LIGHTS = (1, 4)  # sharp-edged lights of an area-light map (inclusive)
LOBE_ROW = 6  # values of a Gaussian lobe's row in ``LightingSpec.procedural``
AREA_ROW = 9  # values of an area light's row
SKY_ROW = 6  # values of a sky row: zenith and ground rgb
STREET_ROW = 9  # values of a sky row with a lit street: zenith, ground and street rgb
LIGHT_FAMILIES = ("procedural", "procedural_night", "procedural_key", "procedural_area")  # procedural map names
LIGHT_KELVIN_RANGE = (3500.0, 10000.0)  # colour temperatures of tinted lights (sampled uniformly in mireds)
# Median ``intensity`` of sampled sun-sky lighting (x 0.5-2, log-uniform). At 1.0 the baked sky gives an upward
# irradiance of 0.4-1.5 (sun at 15-70°) against a median of 2.7 over the bundled HDRIs (0.3 night - 14 studio), so
# 2.5 puts sun-sky scenes in the same exposure range as the HDRI scenes.
SUNSKY_INTENSITY = 2.5
NORMAL_MAP_P = 0.3  # probability that a sampled material has a procedural normal map
ROUNDED_BOX_BEVEL = 0.2  # bevel radius of the canonical rounded box ([-1, 1]³)
TEXTURE_KINDS = ("constant", "checker", "noise", "stripes", "gradient")
MOTIONS = ("static", "orbit", "oscillation", "light_rotation", "object_motion")
DEFAULT_SPP = 256  # noise PSNR 43-53 dB at 256² on typical scenes (see mitsuba_render's docstring)
GROUND_HALF_SIZE = 40.0  # metres: the ground reaches (nearly) to the horizon
TEXTURE_SIZE = 256  # texels per side of the procedural textures
MESH_SEGMENTS = 64  # tessellation of the curved mesh primitives (smooth silhouettes at 256²)


# ---------------------------------------------------------------------------------------------------------------
# Specs


@dataclass
class TextureSpec:
    """Procedural basecolour texture; generated by :func:`make_texture`, tiled ``uv_scale`` times per uv unit.

    ``kind``: ``constant`` (colors[0]), ``checker`` (``frequency`` cells per uv unit), ``stripes`` (integer wave
    vector ``(frequency, tilt)``), ``noise`` (tileable value noise, ``frequency`` cells at the coarsest octave,
    ``seed``), ``gradient`` (smooth cosine ramp between the two colours along u, ``frequency`` periods).
    """

    kind: str
    colors: list[list[float]]  # sRGB [0, 1]: one (constant) or two colours
    frequency: int = 4
    tilt: int = 0  # stripes: the wave vector's v component
    seed: int = 0  # noise
    uv_scale: float = 1.0  # repetitions of the texture per uv unit of the surface


@dataclass
class NormalMapSpec:
    """Procedural tangent-space normal map; generated by :func:`make_normal_map`, tiled ``uv_scale`` times per uv unit.

    A tileable height field h(u, v) (``noise``: value noise of ``frequency`` cells and ``seed``; ``bumps``: a grid
    of ``frequency`` x ``frequency`` round bumps) becomes the normal ``normalize(-k ∂h/∂u, -k ∂h/∂v, 1)`` with k
    chosen so that the steepest texel tilts by ``atan(strength)``.
    """

    kind: str
    frequency: int = 4
    strength: float = 0.5  # tangent of the largest tilt
    seed: int = 0
    uv_scale: float = 1.0


@dataclass
class MaterialSpec:
    """Principled BSDF: basecolour (a constant sRGB colour or a texture), scalar roughness and metallic.

    ``normal_map``: optional :class:`NormalMapSpec`, applied with Mitsuba's ``normalmap`` wrapper.
    """

    roughness: float
    metallic: float
    basecolor_rgb: list[float] | None = None  # sRGB [0, 1]; used when ``texture`` is None
    texture: TextureSpec | None = None
    normal_map: NormalMapSpec | None = None

    def __post_init__(self) -> None:
        if (self.basecolor_rgb is None) == (self.texture is None):
            raise ValueError("MaterialSpec needs exactly one of basecolor_rgb and texture")


@dataclass
class ObjectSpec:
    shape: str
    size: list[float]  # per-axis scale of the canonical primitive (uniform for sphere, torus, capsule)
    position: list[float]  # world position of the object's origin at rest (frame offsets are added)
    rotation_deg: list[float]  # Euler x, y, z in degrees; matrix Rz @ Ry @ Rx
    material: MaterialSpec
    offsets: list[list[float]] = field(default_factory=list)  # per-frame translation (T x 3) or empty (static)
    radius: float = 0.0  # horizontal bounding-circle radius used for collision-free placement
    shape_seed: int = 0  # geometry seed of the SEEDED_SHAPES (bumpy_sphere, blob)
    mesh_source: str = "numpy"  # "trimesh" (TRIMESH_SHAPES built with trimesh) or "numpy"

    def to_world(self, frame: int = 0) -> np.ndarray:
        """(4, 4) object-to-world matrix at ``frame``."""
        pos = np.asarray(self.position, dtype=np.float64)
        if self.offsets:
            pos = pos + np.asarray(self.offsets[frame], dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = euler_matrix(self.rotation_deg) @ np.diag(self.size)
        m[:3, 3] = pos
        return m


@dataclass
class CameraSpec:
    fov_deg: float  # vertical field of view
    c2w: list[list[list[float]]]  # (T, 4, 4) camera-to-world, OpenGL axes (+x right, +y up, looks along -z)


def light_direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """(3,) float64 world direction at ``elevation_deg`` above the ground and ``azimuth_deg`` from +z toward +x:
    ``(cos e sin a, sin e, cos e cos a)``, the sun's and every procedural light's."""
    e, a = math.radians(elevation_deg), math.radians(azimuth_deg)
    return np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])


@dataclass
class LightingSpec:
    """Environment lighting: an HDRI file (``kind="hdri"``), Mitsuba's analytic sun and sky (``"sunsky"``) or a
    procedural map (``"procedural"``: ``procedural`` holds its sky and lights, see :func:`sample_procedural`).

    For ``sunsky`` (``name="sunsky"``, ``path=""``) the sun sits at world direction ``(cos e sin a, sin e,
    cos e cos a)`` (e = ``sun_elevation_deg`` above the ground, a = ``sun_azimuth_deg`` from +z toward +x) at light
    rotation 0; the sky is baked into an equirect HDR (``mitsuba_render.bake_sunsky``) that then plays the
    HDRI's part everywhere (same rotation and ``intensity`` semantics).
    """

    name: str  # HDRI name (file stem); "sunsky" for the analytic sky
    path: str  # .hdr / .exr file; "" for the analytic sky
    intensity: float  # radiance scale (``strength`` of ``prepare_hdr``)
    base_rotation_deg: float  # rotation about +y of every frame
    frame_rotation_deg: list[float]  # (T,) extra rotation per frame
    kind: str = "hdri"  # "hdri" | "sunsky" | "procedural"
    sun_elevation_deg: float = 45.0
    sun_azimuth_deg: float = 0.0
    turbidity: float = 3.0  # Hosek-Wilkie sky turbidity (1-10)
    sky_albedo: float = 0.3  # ground albedo of the sky model
    kelvin: float = REFERENCE_KELVIN  # colour temperature the map's white is moved to (reference: unchanged)
    mirror: bool = False  # the map mirrored left-right before anything else
    # procedural: [zenith r, g, b, ground r, g, b] (and optionally [street r, g, b]: radiance added below the
    # horizon, :func:`lit_street`), then per light either a Gaussian lobe [azimuth°, elevation°,
    # sigma°, r, g, b] (peak radiance) or a sharp-edged area light [azimuth°, elevation°, half width°, half height°,
    # roll°, exponent, r, g, b] (radiance inside; :func:`superellipse_solid_angle`), in the world frame at light
    # rotation 0
    procedural: list[list[float]] | None = None

    def gain(self) -> np.ndarray:
        """(3,) linear RGB gain of the light's colour temperature (unit luminance; ones at the reference)."""
        return white_balance_gain(self.kelvin)

    def sun_direction(self) -> np.ndarray:
        """(3,) float64 world direction toward the sun at light rotation 0 (sunsky)."""
        return light_direction(self.sun_azimuth_deg, self.sun_elevation_deg)

    def angles_deg(self) -> np.ndarray:
        """(T,) float64 total light rotation about +y per frame, degrees (``rotations`` of ``project_envmap``)."""
        return self.base_rotation_deg + np.asarray(self.frame_rotation_deg, dtype=np.float64)


@dataclass
class SceneSpec:
    seed: int
    resolution: list[int]  # (H, W)
    num_frames: int
    motion: str
    ground: MaterialSpec | None  # None: no ground plane
    objects: list[ObjectSpec]
    camera: CameraSpec
    lighting: LightingSpec
    spp: int = DEFAULT_SPP

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (lists, floats, ints, strings, None)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneSpec:
        d = dict(data)
        d["ground"] = _material_from_dict(d["ground"]) if d.get("ground") is not None else None
        d["objects"] = [_object_from_dict(o) for o in d["objects"]]
        d["camera"] = CameraSpec(**d["camera"])
        d["lighting"] = LightingSpec(**d["lighting"])
        return cls(**d)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _material_from_dict(d: dict[str, Any]) -> MaterialSpec:
    d = dict(d)
    d["texture"] = TextureSpec(**d["texture"]) if d.get("texture") is not None else None
    d["normal_map"] = NormalMapSpec(**d["normal_map"]) if d.get("normal_map") is not None else None
    return MaterialSpec(**d)


def _object_from_dict(d: dict[str, Any]) -> ObjectSpec:
    d = dict(d)
    d["material"] = _material_from_dict(d["material"])
    return ObjectSpec(**d)


# ---------------------------------------------------------------------------------------------------------------
# Geometry helpers (numpy; shared with the renderer)


def euler_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation ``Rz @ Ry @ Rx`` of Euler angles in degrees."""
    ax, ay, az = np.radians(np.asarray(angles_deg, dtype=np.float64))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world matrix of a camera at ``eye`` looking at ``target``."""
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


@dataclass(frozen=True)
class MeshData:
    """Triangle mesh with per-vertex normals and uvs (faces counter-clockwise seen from outside)."""

    vertices: np.ndarray  # (V, 3) float32
    normals: np.ndarray  # (V, 3) float32, unit, outward
    uvs: np.ndarray  # (V, 2) float32
    faces: np.ndarray  # (F, 3) uint32


def _grid_mesh(pos: np.ndarray, nrm: np.ndarray, uv: np.ndarray) -> MeshData:
    """Mesh of an (R, C) vertex grid; quads split in two, winding so that face normals follow ``nrm``."""
    rows, cols = pos.shape[:2]
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    v, n = pos.reshape(-1, 3), nrm.reshape(-1, 3)
    face_n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    flip = np.einsum("fk,fk->f", face_n, n[faces].sum(1)) < 0
    faces[flip] = faces[flip][:, ::-1]
    keep = np.linalg.norm(face_n, axis=-1) > 1e-12  # pole quads degenerate into triangles
    return MeshData(
        v.astype(np.float32), n.astype(np.float32), uv.reshape(-1, 2).astype(np.float32), faces[keep].astype(np.uint32)
    )


def _merge(*meshes: MeshData) -> MeshData:
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return MeshData(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.normals for m in meshes]),
        np.concatenate([m.uvs for m in meshes]),
        np.concatenate([m.faces + np.uint32(o) for m, o in zip(meshes, offsets, strict=True)]),
    )


def _revolve(
    profile_r: np.ndarray,
    profile_y: np.ndarray,
    normal_r: np.ndarray,
    normal_y: np.ndarray,
    v: np.ndarray,
    segments: int,
) -> MeshData:
    """Surface of revolution about +y of a profile (radius, height) with its 2D normals; u = angle / 2π."""
    phi = np.linspace(0.0, 2.0 * np.pi, segments + 1)  # the seam column is duplicated (u = 0 and 1)
    cos, sin = np.cos(phi)[None, :], np.sin(phi)[None, :]
    r, y, nr, ny = (a[:, None] for a in (profile_r, profile_y, normal_r, normal_y))
    pos = np.stack(np.broadcast_arrays(r * sin, y, r * cos), -1)
    nrm = np.stack(np.broadcast_arrays(nr * sin, ny, nr * cos), -1)
    uv = np.stack(np.broadcast_arrays(phi[None, :] / (2 * np.pi), v[:, None]), -1)
    return _grid_mesh(pos, nrm, uv)


def _disk(y: float, up: bool, segments: int) -> MeshData:
    """Cap of radius 1 at height y, normal ±y; planar uv."""
    r = np.array([0.0, 1.0])
    mesh = _revolve(r, np.full(2, y), np.zeros(2), np.full(2, 1.0 if up else -1.0), np.zeros(2), segments)
    uv = mesh.vertices[:, [0, 2]] * 0.5 + 0.5
    return MeshData(mesh.vertices, mesh.normals, uv.astype(np.float32), mesh.faces)


@lru_cache(maxsize=8)
def canonical_mesh(shape: str, segments: int = MESH_SEGMENTS) -> MeshData:
    """Mesh of a canonical primitive (see the module docstring); ``sphere`` and ``cube`` too, for bounds.

    Seeded shapes get seed 0 and TRIMESH_SHAPES their numpy build here: use :func:`object_mesh` for an object.
    """
    t = np.linspace(0.0, 1.0, segments // 2 + 1)
    if shape == "sphere":
        theta = np.pi * t
        return _revolve(np.sin(theta), np.cos(theta), np.sin(theta), np.cos(theta), t, segments)
    if shape == "cylinder":
        side = _revolve(np.ones(2), np.array([1.0, -1.0]), np.ones(2), np.zeros(2), np.array([0.0, 1.0]), segments)
        return _merge(side, _disk(1.0, True, segments), _disk(-1.0, False, segments))
    if shape == "capsule":  # two hemispheres of radius 0.5 joined by a cylinder of height 1
        theta = np.pi * np.concatenate([t[: len(t) // 2 + 1], t[len(t) // 2 :]])
        shift = np.where(np.arange(len(theta)) <= len(t) // 2, 0.5, -0.5)
        y, r = 0.5 * np.cos(theta) + shift, 0.5 * np.sin(theta)
        return _revolve(r, y, np.sin(theta), np.cos(theta), np.linspace(0.0, 1.0, len(theta)), segments)
    if shape == "torus":
        alpha = 2.0 * np.pi * np.linspace(0.0, 1.0, segments // 2 + 1)
        r, y = 0.7 + 0.3 * np.cos(alpha), 0.3 * np.sin(alpha)
        return _revolve(r, y, np.cos(alpha), np.sin(alpha), alpha / (2 * np.pi), segments)
    if shape == "cube":
        faces = []
        for axis in range(3):
            for sign in (1.0, -1.0):
                g = np.linspace(-1.0, 1.0, 2)
                a, b = np.meshgrid(g, g, indexing="ij")
                pos = np.zeros((2, 2, 3))
                pos[..., axis], pos[..., (axis + 1) % 3], pos[..., (axis + 2) % 3] = sign, a, b
                nrm = np.zeros((2, 2, 3))
                nrm[..., axis] = sign
                faces.append(_grid_mesh(pos, nrm, np.stack([a, b], -1) * 0.5 + 0.5))
        return _merge(*faces)
    if shape == "rounded_box":
        return _rounded_box()
    if shape == "cone":
        return _numpy_cone(segments)
    if shape == "annulus":
        return _numpy_annulus(segments)
    if shape in SEEDED_SHAPES:
        return shape_mesh(shape, 0, "numpy", segments)
    raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")


def _rounded_box(bevel: float = ROUNDED_BOX_BEVEL, steps: int = 6) -> MeshData:
    """[-1, 1]³ box whose edges and corners are rounded with radius ``bevel`` (exact normals).

    Every cube-face grid point q maps to ``c + bevel * normalize(q - c)`` with ``c = clip(q, -(1 - bevel), 1 -
    bevel)``: flat in the face interior, a quarter-cylinder along the edges and an eighth-sphere at the corners,
    continuous across the six face grids (which meet at the 45° lines of the bevels).
    """
    h = 1.0 - bevel
    g = np.unique(
        np.concatenate([np.linspace(-1, -h, steps + 1), np.linspace(-h, h, 5), np.linspace(h, 1, steps + 1)])
    )
    a, b = np.meshgrid(g, g, indexing="ij")
    parts = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            q = np.zeros((*a.shape, 3))
            q[..., axis], q[..., (axis + 1) % 3], q[..., (axis + 2) % 3] = sign, a, b
            core = np.clip(q, -h, h)
            nrm = (q - core) / np.linalg.norm(q - core, axis=-1, keepdims=True)
            parts.append(_grid_mesh(core + bevel * nrm, nrm, np.stack([a, b], -1) * 0.5 + 0.5))
    return _merge(*parts)


def _weld(vertices: np.ndarray) -> np.ndarray:
    """(V,) index of each vertex's position class (vertices at the same position up to 1e-9 share one)."""
    key = np.round(np.asarray(vertices, dtype=np.float64), 9) + 0.0  # + 0.0 turns -0.0 into 0.0
    return np.unique(key, axis=0, return_inverse=True)[1].reshape(-1)


def smooth_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit vertex normals: area-weighted face normals summed over vertices welded by position."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 x area
    cls = _weld(v)
    acc = np.zeros((cls.max() + 1, 3))
    for k in range(3):
        np.add.at(acc, cls[f[:, k]], face_n)
    n = acc[cls]
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _radial_noise(directions: np.ndarray, seed: int, waves: int, freq: tuple[float, float]) -> np.ndarray:
    """(V,) smooth seeded function of unit directions in [-1, 1]: a sum of ``waves`` random plane waves."""
    rng = np.random.default_rng(seed)
    total = np.zeros(len(directions))
    for _ in range(waves):
        axis = rng.normal(size=3)
        omega = axis / np.linalg.norm(axis) * rng.uniform(*freq)
        total += rng.uniform(0.5, 1.0) * np.sin(directions @ omega + rng.uniform(0.0, 2.0 * np.pi))
    return total / max(np.abs(total).max(), 1e-12)


def _displace(directions: np.ndarray, faces: np.ndarray, uvs: np.ndarray, seed: int, kind: str) -> MeshData:
    """Unit-sphere mesh displaced along its normal by seeded low-frequency noise, scaled to radius <= 1."""
    amplitude, waves, freq = (0.12, 6, (1.5, 3.5)) if kind == "bumpy_sphere" else (0.3, 3, (0.8, 1.8))
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    r = 1.0 + amplitude * _radial_noise(d, seed, waves, freq)
    v = d * (r / r.max())[:, None]
    return MeshData(v.astype(np.float32), smooth_normals(v, faces).astype(np.float32), uvs.astype(np.float32), faces)


def _numpy_cone(segments: int) -> MeshData:
    """Cone of base radius 1 at y = -1 and apex at y = 1 (capped base)."""
    nr, ny = 2.0 / math.sqrt(5.0), 1.0 / math.sqrt(5.0)
    side = _revolve(
        np.array([1.0, 0.0]), np.array([-1.0, 1.0]), np.full(2, nr), np.full(2, ny), np.array([0.0, 1.0]), segments
    )
    return _merge(side, _disk(-1.0, False, segments))


ANNULUS_INNER, ANNULUS_HALF_HEIGHT = 0.5, 0.25


def _numpy_annulus(segments: int) -> MeshData:
    """Flat ring about +y: radii ANNULUS_INNER / 1, y in ±ANNULUS_HALF_HEIGHT (four surfaces of revolution)."""
    ri, hh = ANNULUS_INNER, ANNULUS_HALF_HEIGHT
    walls = [
        ((1.0, 1.0), (hh, -hh), (1.0, 0.0)),  # outer wall
        ((ri, ri), (-hh, hh), (-1.0, 0.0)),  # inner wall
        ((ri, 1.0), (hh, hh), (0.0, 1.0)),  # top
        ((1.0, ri), (-hh, -hh), (0.0, -1.0)),  # bottom
    ]
    parts = [
        _revolve(np.array(r), np.array(y), np.full(2, n[0]), np.full(2, n[1]), np.array([0.0, 1.0]), segments)
        for r, y, n in walls
    ]
    return _merge(*parts)


def trimesh_available() -> bool:
    try:
        import trimesh  # noqa: F401
    except ImportError:
        return False
    return True


def _cylindrical_uv(v: np.ndarray) -> np.ndarray:
    return np.stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5, 0.5 - 0.5 * v[:, 1]], -1)


def _trimesh_shape(shape: str, seed: int, segments: int) -> MeshData:
    """TRIMESH_SHAPES built with ``trimesh.creation`` (same canonical frame and bounds as the numpy fallbacks)."""
    import trimesh

    if shape == "blob":
        ico = trimesh.creation.icosphere(subdivisions=4)
        d = np.asarray(ico.vertices, dtype=np.float64)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        uv = np.stack(
            [np.arctan2(d[:, 0], d[:, 2]) / (2 * np.pi) + 0.5, np.arccos(np.clip(d[:, 1], -1, 1)) / np.pi], -1
        )
        return _displace(d, np.asarray(ico.faces, dtype=np.uint32), uv, seed, "blob")
    if shape == "cone":
        mesh = trimesh.creation.cone(radius=1.0, height=2.0, sections=segments)  # axis +z, base at z = 0
    elif shape == "annulus":
        mesh = trimesh.creation.annulus(
            r_min=ANNULUS_INNER, r_max=1.0, height=2 * ANNULUS_HALF_HEIGHT, sections=segments
        )
    else:
        raise ValueError(f"{shape!r} is not a trimesh shape")
    zmid = 0.5 * (mesh.bounds[0, 2] + mesh.bounds[1, 2])
    mesh.apply_transform(np.array([[1, 0, 0, 0], [0, 0, 1, -zmid], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64))
    mesh = trimesh.graph.smooth_shade(mesh, angle=math.radians(30.0))  # split sharp edges, smooth the rest
    v = np.asarray(mesh.vertices, dtype=np.float64)
    n = np.array(mesh.vertex_normals, dtype=np.float64)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    f = np.asarray(mesh.faces, dtype=np.uint32)
    return MeshData(v.astype(np.float32), n.astype(np.float32), _cylindrical_uv(v).astype(np.float32), f)


@lru_cache(maxsize=64)
def shape_mesh(shape: str, seed: int = 0, source: str = "numpy", segments: int = MESH_SEGMENTS) -> MeshData:
    """Mesh of ``shape`` (``seed``: geometry of the SEEDED_SHAPES; ``source="trimesh"``: the trimesh build of the
    TRIMESH_SHAPES, which falls back to the numpy build when trimesh is not importable)."""
    if source == "trimesh" and shape in TRIMESH_SHAPES and trimesh_available():
        return _trimesh_shape(shape, seed, segments)
    if shape in SEEDED_SHAPES:
        sphere = canonical_mesh("sphere", segments)
        return _displace(sphere.vertices, sphere.faces, sphere.uvs, seed, shape)
    return canonical_mesh(shape, segments)


def object_mesh(obj: ObjectSpec) -> MeshData:
    """Canonical (object-space) mesh of an :class:`ObjectSpec`."""
    return shape_mesh(obj.shape, obj.shape_seed if obj.shape in SEEDED_SHAPES else 0, obj.mesh_source)


# ---------------------------------------------------------------------------------------------------------------
# Textures


def _value_noise(size: int, cells: int, seed: int, octaves: int = 4) -> np.ndarray:
    """(size, size) tileable fractal value noise in [0, 1] (bilinear lattices, smoothstep-free)."""
    rng = np.random.default_rng(seed)
    total = np.zeros((size, size))
    x = (np.arange(size) + 0.5) / size
    for o in range(octaves):
        n = cells * 2**o
        lattice = rng.random((n, n))
        f = x * n - 0.5
        i0 = np.floor(f).astype(int)
        w = f - i0
        i0, i1 = i0 % n, (i0 + 1) % n
        rows = lattice[i0] * (1 - w)[:, None] + lattice[i1] * w[:, None]  # interpolate along v
        total += 0.5**o * (rows[:, i0] * (1 - w)[None, :] + rows[:, i1] * w[None, :])
    lo, hi = total.min(), total.max()
    return (total - lo) / max(hi - lo, 1e-12)


def make_texture(tex: TextureSpec, size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) float32 sRGB texture of a :class:`TextureSpec` (row 0 = v near 0); tiles seamlessly."""
    a = np.asarray(tex.colors[0], dtype=np.float64)
    b = np.asarray(tex.colors[-1], dtype=np.float64)
    x = (np.arange(size) + 0.5) / size
    v, u = np.meshgrid(x, x, indexing="ij")
    if tex.kind == "constant":
        w = np.zeros_like(u)
    elif tex.kind == "checker":
        w = ((np.floor(u * tex.frequency) + np.floor(v * tex.frequency)) % 2).astype(np.float64)
    elif tex.kind == "stripes":
        w = (np.mod(tex.frequency * u + tex.tilt * v, 1.0) < 0.5).astype(np.float64)
    elif tex.kind == "noise":
        w = _value_noise(size, tex.frequency, tex.seed)
    elif tex.kind == "gradient":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * tex.frequency * u)
    else:
        raise ValueError(f"unknown texture kind {tex.kind!r} (known: {', '.join(TEXTURE_KINDS)})")
    return (a * (1 - w[..., None]) + b * w[..., None]).astype(np.float32)


def make_normal_map(nm: NormalMapSpec, size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) float32 tangent-space normal map encoded as RGB ``(n + 1) / 2`` (row 0 = v near 0).

    x follows +u (Mitsuba's ``dp_du``), y follows +v, z the surface normal; tiles seamlessly (periodic
    central differences of a tileable height field).
    """
    x = (np.arange(size) + 0.5) / size
    v, u = np.meshgrid(x, x, indexing="ij")
    if nm.kind == "noise":
        h = _value_noise(size, nm.frequency, nm.seed)
    elif nm.kind == "bumps":
        h = (0.5 - 0.5 * np.cos(2 * np.pi * nm.frequency * u)) * (0.5 - 0.5 * np.cos(2 * np.pi * nm.frequency * v))
    else:
        raise ValueError(f"unknown normal map kind {nm.kind!r} (known: {', '.join(NORMAL_MAP_KINDS)})")
    dh_du = (np.roll(h, -1, axis=1) - np.roll(h, 1, axis=1)) * (size / 2.0)
    dh_dv = (np.roll(h, -1, axis=0) - np.roll(h, 1, axis=0)) * (size / 2.0)
    k = nm.strength / max(float(np.sqrt(dh_du**2 + dh_dv**2).max()), 1e-12)
    n = np.stack([-k * dh_du, -k * dh_dv, np.ones_like(h)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return (0.5 * n + 0.5).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Sampling


def _f(x: float) -> float:
    return float(x)


def _color(rng: np.random.Generator) -> list[float]:
    """Random sRGB colour: HSV with moderate saturation, avoiding pure black and white."""
    h, s, v = rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.95)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return [_f(c) for c in rgb]


def sample_texture(rng: np.random.Generator, uv_scale: float) -> TextureSpec:
    kind = str(rng.choice(TEXTURE_KINDS[1:]))
    freq = int(rng.integers(2, 9)) if kind != "gradient" else int(rng.integers(1, 3))
    tilt = int(rng.integers(-2, 3)) if kind == "stripes" else 0
    seed = int(rng.integers(0, 2**31 - 1)) if kind == "noise" else 0
    return TextureSpec(kind, [_color(rng), _color(rng)], freq, tilt, seed, _f(uv_scale))


def sample_normal_map(rng: np.random.Generator, uv_scale: float) -> NormalMapSpec:
    kind = str(rng.choice(NORMAL_MAP_KINDS))
    freq = int(rng.integers(2, 9))
    strength = rng.uniform(0.2, 0.8)
    seed = int(rng.integers(0, 2**31 - 1))
    return NormalMapSpec(kind, freq, _f(strength), seed if kind == "noise" else 0, _f(uv_scale))


def sample_material(
    rng: np.random.Generator, *, textured_p: float, uv_scale: float, metal_p: float, normal_p: float = NORMAL_MAP_P
) -> MaterialSpec:
    metallic = rng.uniform(0.6, 1.0) if rng.random() < metal_p else rng.uniform(0.0, 0.15)
    roughness = rng.uniform(0.05, 1.0)
    if rng.random() < textured_p:
        material = MaterialSpec(_f(roughness), _f(metallic), texture=sample_texture(rng, uv_scale))
    else:
        material = MaterialSpec(_f(roughness), _f(metallic), basecolor_rgb=_color(rng))
    if rng.random() < normal_p:
        material.normal_map = sample_normal_map(rng, uv_scale)
    return material


def _shape_size(rng: np.random.Generator, shape: str) -> list[float]:
    s = rng.uniform(0.25, 0.55)
    if shape in ("cube", "cylinder", "rounded_box", "cone"):
        return [_f(s), _f(s * rng.uniform(0.6, 1.6)), _f(s)]
    return [_f(s)] * 3


def _rest_on_ground(mesh: MeshData, size: list[float], rot: list[float]) -> tuple[float, float]:
    """(height of the origin that puts the lowest point on y = 0, horizontal bounding radius)."""
    verts = mesh.vertices.astype(np.float64) @ (euler_matrix(rot) @ np.diag(size)).T
    return -float(verts[:, 1].min()), float(np.linalg.norm(verts[:, [0, 2]], axis=-1).max())


def _linear_path(num_frames: int, amount: float) -> np.ndarray:
    """(T,) from -amount/2 to +amount/2 (zeros for one frame)."""
    return np.linspace(-0.5, 0.5, num_frames) * amount if num_frames > 1 else np.zeros(1)


def _place_objects(rng: np.random.Generator, num_frames: int, moving: bool) -> list[ObjectSpec]:
    count = int(rng.integers(1, 4))
    objects: list[ObjectSpec] = []
    paths: list[np.ndarray] = []  # (T, 2) horizontal centres per placed object
    for _ in range(count):
        shape = str(rng.choice(SHAPES))
        size = _shape_size(rng, shape)
        tilt = rng.random() < 0.3 and shape != "sphere"
        rot = [_f(rng.uniform(-35, 35)) if tilt else 0.0, _f(rng.uniform(0, 360)), 0.0]
        if shape == "torus" and rng.random() < 0.5:
            rot[0] = _f(rng.uniform(-20, 20))  # most tori lie flat; some lean a little
        shape_seed = int(rng.integers(0, 2**31 - 1)) if shape in SEEDED_SHAPES else 0
        source = "trimesh" if shape in TRIMESH_SHAPES and trimesh_available() else "numpy"
        height, radius = _rest_on_ground(shape_mesh(shape, shape_seed, source), size, rot)
        material = sample_material(rng, textured_p=0.6, uv_scale=_f(rng.choice([1.0, 2.0, 3.0])), metal_p=0.3)
        for _attempt in range(50):
            centre = rng.uniform(-1.2, 1.2, 2)
            velocity = rng.uniform(-0.6, 0.6, 2) if moving else np.zeros(2)
            path = centre[None] + _linear_path(num_frames, 1.0)[:, None] * velocity[None]  # (T, 2)
            clear = all(
                np.linalg.norm(path - other, axis=-1).min() > radius + other_obj.radius + 0.05
                for other, other_obj in zip(paths, objects, strict=True)
            )
            if clear:
                break
        else:
            continue  # no room left for this object: skip it (the first one always fits)
        offsets = [[_f(p[0] - centre[0]), 0.0, _f(p[1] - centre[1])] for p in path] if moving else []
        position = [_f(centre[0]), _f(height), _f(centre[1])]
        objects.append(ObjectSpec(shape, size, position, rot, material, offsets, _f(radius), shape_seed, source))
        paths.append(path)
    return objects


def _camera(rng: np.random.Generator, objects: list[ObjectSpec], num_frames: int, motion: str) -> CameraSpec:
    centres = np.array([o.position for o in objects])
    target = centres.mean(0)
    target[1] = float(np.mean([o.position[1] for o in objects])) * 0.8
    reach = max(
        np.linalg.norm(c[[0, 2]] - target[[0, 2]]) + o.radius + 0.3 for c, o in zip(centres, objects, strict=True)
    )
    fov = rng.uniform(30.0, 60.0)
    distance = max(reach, 0.8) / math.sin(math.radians(fov) / 2) * rng.uniform(0.75, 1.1)
    elevation, azimuth = rng.uniform(8.0, 45.0), rng.uniform(0.0, 360.0)
    d_az, d_el = np.zeros(num_frames), np.zeros(num_frames)
    if motion == "orbit":
        d_az = _linear_path(num_frames, rng.choice([-1, 1]) * rng.uniform(30.0, 120.0)) if num_frames > 1 else d_az
    elif motion == "oscillation" and num_frames > 1:
        phase = 2 * np.pi * np.arange(num_frames) / (num_frames - 1)
        d_az = rng.uniform(5.0, 20.0) * np.sin(phase)
        d_el = rng.uniform(0.0, 5.0) * np.sin(2 * phase)
    c2w = []
    for t in range(num_frames):
        az, el = math.radians(azimuth + d_az[t]), math.radians(elevation + d_el[t])
        offset = distance * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
        c2w.append([[_f(x) for x in row] for row in look_at(target + offset, target)])
    return CameraSpec(_f(fov), c2w)


def _lighting(rng: np.random.Generator, hdri_paths: Sequence[Path], num_frames: int, motion: str) -> LightingSpec:
    path = Path(hdri_paths[int(rng.integers(len(hdri_paths)))])
    intensity = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    base = rng.uniform(0.0, 360.0)
    frames = np.zeros(num_frames)
    if motion == "light_rotation" and num_frames > 1:
        frames = np.linspace(0.0, 1.0, num_frames) * rng.choice([-1, 1]) * rng.uniform(90.0, 360.0)
    angles = [_f(a) for a in frames]
    if rng.random() < SUNSKY_P:  # the analytic sky: its sun azimuth already randomises the orientation
        elevation, azimuth = rng.uniform(5.0, 70.0), rng.uniform(0.0, 360.0)
        turbidity, albedo = rng.uniform(2.0, 6.0), rng.uniform(0.1, 0.5)
        sky_intensity = SUNSKY_INTENSITY * math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        return LightingSpec(
            "sunsky",
            "",
            _f(sky_intensity),
            0.0,
            angles,
            "sunsky",
            _f(elevation),
            _f(azimuth),
            _f(turbidity),
            _f(albedo),
        )
    return LightingSpec(path.stem, str(path), _f(intensity), _f(base), angles)


def sample_scene(
    seed: int,
    *,
    resolution: tuple[int, int] = (256, 256),
    num_frames: int = 1,
    hdri_paths: Sequence[Path],
    motion: str | None = None,
    spp: int = DEFAULT_SPP,
    light_augment: bool = True,
    light_family: str | None = None,
) -> SceneSpec:
    """Random scene of ``num_frames`` frames at ``resolution`` (H, W), fully determined by ``seed``.

    ``light_augment``: the light variations of training clips (a procedural map, colour temperature, mirror; module
    doc); False keeps the maps as they are. ``light_family`` (one of :data:`LIGHT_FAMILIES`, with ``light_augment``)
    lights every scene with that procedural family, drawn as it would be where the seed picks it: a test set of one
    kind of light.

    ``motion``: one of :data:`MOTIONS`, or None for a seeded random choice. ``hdri_paths``: the environment
    maps to choose from (e.g. the bundled presets: ``[resolve_envmap(n)[1] for n in list_presets()]``).
    """
    if not hdri_paths:
        raise ValueError("hdri_paths is empty")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if light_family is not None and (light_family not in LIGHT_FAMILIES or not light_augment):
        raise ValueError(f"light_family must be one of {', '.join(LIGHT_FAMILIES)} with light_augment")
    rng = np.random.default_rng(seed)
    chosen = str(rng.choice(MOTIONS))  # drawn even when given, so the rest of the scene does not depend on it
    motion = chosen if motion is None else motion
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r} (known: {', '.join(MOTIONS)})")
    ground = sample_material(rng, textured_p=0.8, uv_scale=_f(GROUND_HALF_SIZE * rng.uniform(0.3, 1.0)), metal_p=0.1)
    objects = _place_objects(rng, num_frames, moving=motion == "object_motion")
    camera = _camera(rng, objects, num_frames, motion)
    lighting = _lighting(rng, hdri_paths, num_frames, motion)
    if light_augment:
        lighting = _light_variation(np.random.default_rng([seed, 1]), lighting, light_family)
    return SceneSpec(
        seed=int(seed),
        resolution=[int(resolution[0]), int(resolution[1])],
        num_frames=int(num_frames),
        motion=motion,
        ground=ground,
        objects=objects,
        camera=camera,
        lighting=lighting,
        spp=int(spp),
    )


def _light_variation(rng: np.random.Generator, lighting: LightingSpec, family: str | None = None) -> LightingSpec:
    """A procedural map (probability ``PROCEDURAL_P``), else a procedural night map (``NIGHT_P``; with a lit street
    for ``STREET_P`` of them), else a key-light map (``KEY_P``), else an area-light map (``AREA_P``), a colour
    temperature (``LIGHT_TINT_P``) and a mirror (1/2) for a scene's light. Every value is drawn whatever the
    outcome, so each keeps its own random stream; each family (and the lit street) added later draws after the
    others, so the scenes of a seed that it does not change are the ones drawn before it existed. ``family`` (one
    of :data:`LIGHT_FAMILIES`) takes that family's map whatever the draws say."""
    procedural = sample_procedural(rng)
    use_procedural = rng.random() < PROCEDURAL_P
    tint = rng.random() < LIGHT_TINT_P
    low, high = (1e6 / k for k in reversed(LIGHT_KELVIN_RANGE))  # mireds: perceptually even steps
    kelvin = 1e6 / rng.uniform(low, high) if tint else REFERENCE_KELVIN
    mirror = bool(rng.random() < 0.5)
    night = sample_night(rng)
    use_night = rng.random() < NIGHT_P
    key = sample_key(rng)
    use_key = rng.random() < KEY_P
    area = sample_area(rng)
    use_area = rng.random() < AREA_P
    street_power = _log_uniform(rng, *STREET_POWER)  # drawn last: every family's draws stay what they were
    if rng.random() < STREET_P:
        night = [night[0] + lit_street(night, street_power), *night[1:]]
    drawn = {  # in order of precedence
        "procedural": (procedural, use_procedural),
        "procedural_night": (night, use_night),
        "procedural_key": (key, use_key),
        "procedural_area": (area, use_area),
    }
    name = family or next((name for name, (_, use) in drawn.items() if use), None)
    if name is not None:
        lighting = replace(lighting, name=name, path="", kind="procedural", procedural=drawn[name][0])
    return replace(lighting, kelvin=_f(kelvin), mirror=mirror)


@dataclass(frozen=True)
class LobeMapRanges:
    """What a procedural map draws from: a sky-to-ground gradient and Gaussian light lobes (``LightingSpec.procedural``
    rows). Ranges are uniform unless named log-uniform; lobe elevations are uniform in sin(elevation)."""

    zenith_kelvin: tuple[float, float]
    zenith_radiance: tuple[float, float]  # log-uniform
    ground_kelvin: tuple[float, float]  # the ground is 5-40 % of the zenith's mean radiance
    lobes: tuple[int, int]  # inclusive
    sin_elevation: tuple[float, float]
    sigma_deg: tuple[float, float]  # log-uniform
    irradiance: tuple[float, float]  # at normal incidence, per lobe
    irradiance_log_uniform: bool
    lobe_kelvin: tuple[float, float]


STUDIO_MAP = LobeMapRanges(  # hard key lights to soft boxes
    zenith_kelvin=(4000.0, 12000.0),
    zenith_radiance=(0.1, 1.0),
    ground_kelvin=(3000.0, 6500.0),
    lobes=PROCEDURAL_LIGHTS,
    sin_elevation=(-0.17, 1.0),
    sigma_deg=(2.0, 25.0),
    irradiance=(0.5, 6.0),
    irradiance_log_uniform=False,
    lobe_kelvin=(2500.0, 10000.0),
)
NIGHT_MAP = LobeMapRanges(  # a moonlit sky and tiny, hot, warm lamps near the horizon
    zenith_kelvin=(6000.0, 15000.0),
    zenith_radiance=(0.002, 0.05),
    ground_kelvin=(2500.0, 4500.0),
    lobes=NIGHT_LAMPS,
    sin_elevation=(-0.09, 0.6),
    sigma_deg=(0.25, 2.0),
    irradiance=(0.3, 4.0),
    irradiance_log_uniform=True,
    lobe_kelvin=(1900.0, 4500.0),
)
KEY_MAP = LobeMapRanges(  # a photo studio: a dim room, a key light and perhaps a fill and a rim light
    zenith_kelvin=(4000.0, 8000.0),
    zenith_radiance=(0.01, 0.3),
    ground_kelvin=(3000.0, 6500.0),
    lobes=KEY_LIGHTS,
    sin_elevation=(0.26, 0.87),
    sigma_deg=(1.0, 6.0),
    irradiance=(2.0, 15.0),
    irradiance_log_uniform=True,
    lobe_kelvin=(3000.0, 6500.0),
)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _sky_row(rng: np.random.Generator, ranges: LobeMapRanges | AreaMapRanges) -> list[float]:
    """``[zenith rgb, ground rgb]`` of a procedural map: the ground 5-40 % of the zenith's mean radiance."""
    zenith = white_balance_gain(rng.uniform(*ranges.zenith_kelvin)) * _log_uniform(rng, *ranges.zenith_radiance)
    ground = white_balance_gain(rng.uniform(*ranges.ground_kelvin)) * float(np.mean(zenith)) * rng.uniform(0.05, 0.4)
    return [_f(v) for v in (*zenith, *ground)]


def sample_lobe_map(rng: np.random.Generator, ranges: LobeMapRanges) -> list[list[float]]:
    """Rows of a procedural map drawn from ``ranges``: ``[zenith rgb, ground rgb]``, then one
    ``[azimuth°, elevation°, sigma°, peak rgb]`` per lobe, peak radiance = irradiance / 2π sigma² (what
    ``mitsuba_render.bake_procedural`` integrates back to the irradiance)."""

    rows = [_sky_row(rng, ranges)]
    for _ in range(int(rng.integers(ranges.lobes[0], ranges.lobes[1] + 1))):
        azimuth, elevation = rng.uniform(0.0, 360.0), math.degrees(math.asin(rng.uniform(*ranges.sin_elevation)))
        sigma = _log_uniform(rng, *ranges.sigma_deg)
        low, high = ranges.irradiance
        irradiance = _log_uniform(rng, low, high) if ranges.irradiance_log_uniform else rng.uniform(low, high)
        power = irradiance / (2 * math.pi * math.radians(sigma) ** 2)
        colour = white_balance_gain(rng.uniform(*ranges.lobe_kelvin)) * power
        rows.append([_f(v) for v in (azimuth, elevation, sigma, *colour)])
    return rows


def sample_procedural(rng: np.random.Generator) -> list[list[float]]:
    """Sky and lights of a procedural map (``LightingSpec.procedural``; :data:`STUDIO_MAP`).

    Sky: zenith radiance 0.1-1 at 4,000-12,000 K, ground 5-40 % of it at 3,000-6,500 K (a sky-to-ground
    gradient). Lights: 1-4 lobes (Gaussian in angle, sigma 2-25°) above -10° elevation at 2,500-10,000 K, each
    delivering 0.5-6 units of irradiance at normal incidence (peak radiance = that / 2π sigma²): a small light is
    a hard key light, a large one a soft box.
    """
    return sample_lobe_map(rng, STUDIO_MAP)


def sample_night(rng: np.random.Generator) -> list[list[float]]:
    """Sky and lamps of a procedural night map (``LightingSpec.procedural``; :data:`NIGHT_MAP`).

    Sky: zenith radiance 0.002-0.05 at 6,000-15,000 K (moonlit), ground 5-40 % of it at 2,500-4,500 K. Lamps:
    2-6 lobes of sigma 0.25-2° (most narrower than a texel of the 256 x 512 bake, which keeps their power) at
    -5° to 37° elevation and 1,900-4,500 K (sodium to LED), each delivering 0.3-4 units of irradiance at normal
    incidence. A few texels of radiance up to ~3·10⁴ against a sky 10⁴-10⁷ times darker: the held-out
    street_lamp map has 75 % of its power in texels above 10⁴ (env_log's ceiling) covering 0.01 % of the sphere.
    """
    return sample_lobe_map(rng, NIGHT_MAP)


def lit_street(night: list[list[float]], share: float) -> list[float]:
    """``[street r, g, b]``: the radiance of a street lit by a night map's lamps, added to every texel below the
    horizon (``mitsuba_render.bake_procedural``), so that the street holds ``share`` of the lamps' power (∫ L dω
    over the lower hemisphere = 2π L), in their colour. Training maps draw the share from ``STREET_POWER`` (2-25 %,
    log-uniform).

    Why: a real night map's lamps light the street under them. The held-out street_lamp map has 9 % of its power
    below the horizon, and the forward model, trained on nights whose ground is 5-40 % of a moonlit sky, rendered
    its scenes too dark while that light was in its conditions (``benchmarks/ground_light.py``): the scenes'
    ground plane keeps it from the objects, which the model had never seen at night.
    """
    lamps = np.sum(
        [np.asarray(row[3:], dtype=np.float64) * gaussian_lobe_solid_angle(math.radians(row[2])) for row in night[1:]],
        axis=0,
    )  # (3,) irradiance at normal incidence, all lamps together
    return [_f(v) for v in lamps * share / (2 * math.pi)]


def sample_key(rng: np.random.Generator) -> list[list[float]]:
    """Room and lights of a procedural key-light map (``LightingSpec.procedural``; :data:`KEY_MAP`).

    Room: zenith radiance 0.01-0.3 at 4,000-8,000 K, floor 5-40 % of it. Lights: 1-3 lobes of sigma 1-6° (a small
    softbox to a large one a few metres away), 15-60° up, at 3,000-6,500 K (tungsten to daylight), each delivering
    2-15 units of irradiance at normal incidence, log-uniform: peaks up to ~5·10³. Not lower or smaller: lights near
    the horizon leave the ground lit only indirectly, and sub-degree hot lights make glossy caustics, both noisy at
    the training clips' 32 spp (noise PSNR down to 24 dB at 128², against a median of 35). Why the family: the other
    families leave out bright light from a few small sources. Studio lobes are wide (2-25°, peaks < 10³) and night
    lamps dim (0.3-4 units), while a studio's few lights hold most of its power at 10³-10⁴ in a few % of the
    sphere, several times a sky's irradiance. The held-out studio map has an upward irradiance of 14 with 90 % of its
    power in 1.7 % of the sphere, and the forward model rendered it worse than its own split-sum hint
    (``benchmarks/correction_strength.py``).
    """
    return sample_lobe_map(rng, KEY_MAP)


@dataclass(frozen=True)
class AreaMapRanges:
    """What a procedural area-light map draws from: the sky of :class:`LobeMapRanges` and sharp-edged superellipse
    lights (``LightingSpec.procedural`` rows of ``AREA_ROW`` values). Log-uniform unless named uniform."""

    zenith_kelvin: tuple[float, float]  # uniform
    zenith_radiance: tuple[float, float]
    ground_kelvin: tuple[float, float]  # uniform
    lights: tuple[int, int]  # inclusive
    sin_elevation: tuple[float, float]  # uniform
    half_width_deg: tuple[float, float]
    aspect: tuple[float, float]  # half height / half width
    min_half_deg: float  # no side narrower: sub-degree hot lights make glossy caustics, noisy at 32 spp
    exponent: tuple[float, float]  # of the superellipse: 1 a diamond, 2 an ellipse, 16 nearly a rectangle
    irradiance: tuple[float, float]  # at normal incidence, per light
    kelvin: tuple[float, float]  # uniform


AREA_MAP = AreaMapRanges(  # windows, softboxes, panels and lamps before a sky of any brightness
    zenith_kelvin=(4000.0, 12000.0),
    zenith_radiance=(0.02, 1.0),
    ground_kelvin=(3000.0, 6500.0),
    lights=AREA_LIGHTS,
    sin_elevation=(0.1, 0.95),
    half_width_deg=(2.0, 25.0),
    aspect=(0.2, 1.0),
    min_half_deg=1.0,
    exponent=(1.0, 16.0),
    irradiance=(1.0, 12.0),
    kelvin=(2700.0, 7500.0),
)


def gaussian_lobe_solid_angle(sigma: float) -> float:
    """∫ exp(-θ² / 2 sigma²) dω over the sphere (θ from the lobe's axis, sigma in radians): 2π sigma² for a
    small lobe. A radiance ``colour`` times this is the lobe's power (its irradiance at normal incidence, for a
    small one)."""
    step = math.pi / 20_000
    theta = (np.arange(20_000) + 0.5) * step  # midpoint rule: within 0.05 % for sigma >= 0.1°
    return float(2 * math.pi * step * (np.exp(-0.5 * (theta / sigma) ** 2) * np.sin(theta)).sum())


def superellipse_radius(phi: np.ndarray, half_width: float, half_height: float, exponent: float) -> np.ndarray:
    """Distance from the centre to the edge of the superellipse ``|x / a|^p + |y / b|^p = 1`` along the angle phi
    (radians from +x): ``(|cos phi / a|^p + |sin phi / b|^p)^(-1/p)``, in the units of a and b."""
    c, s = np.abs(np.cos(phi)) / half_width, np.abs(np.sin(phi)) / half_height
    big = np.maximum(c, s)  # factored out: p up to 16 would overflow small sides' powers otherwise
    return 1.0 / (big * ((c / big) ** exponent + (s / big) ** exponent) ** (1.0 / exponent))


def superellipse_solid_angle(half_width_deg: float, half_height_deg: float, exponent: float) -> float:
    """Solid angle of an area light's shape: a superellipse of half sizes a, b (degrees) drawn in the azimuthal
    equidistant projection about the light's axis (x, y = theta cos phi, theta sin phi, theta the angle from the
    axis), so each direction's angle from the axis is exact. ∫ (1 - cos r(phi)) dphi, r the edge's angle."""
    phi = (np.arange(4096) + 0.5) * (2 * math.pi / 4096)
    edge = superellipse_radius(phi, math.radians(half_width_deg), math.radians(half_height_deg), exponent)
    return float((1 - np.cos(np.minimum(edge, math.pi))).mean() * 2 * math.pi)


def sample_area(rng: np.random.Generator) -> list[list[float]]:
    """Sky and lights of a procedural area-light map (``LightingSpec.procedural``; :data:`AREA_MAP`).

    Sky: zenith radiance 0.02-1 (dusk to day) at 4,000-12,000 K, ground 5-40 % of it. Lights: 1-4 sharp-edged
    superellipses (exponent 1-16: diamonds, ellipses, rounded rectangles and nearly square-cornered panels), half
    width 2-25° and half height 0.2-1 of it (at least 1°), turned by a random roll, 6-72° up, at 2,700-7,500 K, each
    delivering 1-12 units of irradiance at normal incidence, log-uniform; radiance = that / the shape's solid angle.
    Why the family: under the held-out studio map (rectangular softboxes) and street_lamp map (hot lamps beside a lit
    sky) the forward model darkened its frames (``benchmarks/correction_strength.py``: +0.22 and +0.63 stops against
    its hint's +0.03 and +0.30), and every other family draws its lights as round Gaussian lobes over a sky of one
    brightness class; real lights are windows, panels and boxes with hard edges, before skies of any brightness.
    It was not the cause: a model that had never seen this family rendered it without darkening. The model follows
    only part of a change in the light's level (``correction_strength.py --light-stops``; benchmarks/README.md).
    """
    ranges = AREA_MAP
    rows = [_sky_row(rng, ranges)]
    for _ in range(int(rng.integers(ranges.lights[0], ranges.lights[1] + 1))):
        azimuth, elevation = rng.uniform(0.0, 360.0), math.degrees(math.asin(rng.uniform(*ranges.sin_elevation)))
        half_width = _log_uniform(rng, *ranges.half_width_deg)
        half_height = max(half_width * _log_uniform(rng, *ranges.aspect), ranges.min_half_deg)
        roll, exponent = rng.uniform(0.0, 180.0), _log_uniform(rng, *ranges.exponent)
        radiance = _log_uniform(rng, *ranges.irradiance) / superellipse_solid_angle(half_width, half_height, exponent)
        colour = white_balance_gain(rng.uniform(*ranges.kelvin)) * radiance
        rows.append([_f(v) for v in (azimuth, elevation, half_width, half_height, roll, exponent, *colour)])
    return rows
