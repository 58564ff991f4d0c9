"""A mesh file -> G-buffers in a pinhole camera: the rasterization step of object insertion.

* Loading: trimesh (OBJ, PLY, GLB/glTF, STL, OFF, ...). Every geometry of the file becomes one
  :class:`MeshPart` with its PBR material: glTF metallic-roughness (factors and textures), OBJ/MTL materials
  through trimesh's own conversion to PBR, or vertex/face colours. Sharp edges are split (trimesh's
  ``smooth_shaded``) so a cube keeps flat faces and a sphere stays smooth.
* Visibility: Mitsuba 3, the data engine's renderer, with one primary ray through each pixel centre
  (:func:`~diffusion_renderer.data.mitsuba_render.primary_hits`). That is what a rasterizer computes
  (pixel-centre coverage, nearest surface, perspective-correct attributes) on the CPU (``llvm_ad_rgb``) or the
  GPU (``cuda_ad_rgb``), and the attributes go through the same principled-BSDF evaluation as the training
  data, so inserted objects follow the training G-buffers' conventions exactly.

Colour spaces: glTF base-colour factors are linear and textures sRGB (the glTF spec); vertex colours and
:func:`override_material` colours are sRGB, like the package's ``basecolor``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_renderer.conventions import srgb_to_linear
from diffusion_renderer.io.errors import InputError

MESH_EXTENSIONS = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
SMOOTHING_ANGLE_DEG = 30.0  # edges sharper than this keep separate (flat) normals


@dataclass
class MeshPart:
    """One geometry of a mesh file, in its own (object) space, with a PBR material.

    Shapes: V vertices, F triangles. ``basecolor_factor`` is linear RGB; textures are (h, w, 3) float in [0, 1]
    (``basecolor_texture`` sRGB-encoded; ``metal_rough_texture`` linear, glTF layout: G roughness, B metallic).
    """

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    normals: np.ndarray  # (V, 3) float64 unit
    uvs: np.ndarray | None = None  # (V, 2), OBJ/trimesh convention: v up, origin at the image's bottom left
    vertex_colors: np.ndarray | None = None  # (V, 3) sRGB [0, 1]
    basecolor_factor: tuple[float, float, float] = (0.8, 0.8, 0.8)
    basecolor_texture: np.ndarray | None = None
    roughness: float = 0.5
    metallic: float = 0.0
    metal_rough_texture: np.ndarray | None = None


# ------------------------------------------------------------------------------------------------------ loading


def _image_array(image: Any) -> np.ndarray | None:
    """PIL image (or None) -> (h, w, 3) float in [0, 1]."""
    if image is None:
        return None
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _factor(value: Any, default: float) -> float:
    return default if value is None else float(value)


def _part(mesh: Any) -> MeshPart:
    """trimesh.Trimesh -> MeshPart (sharp edges split, material converted to metallic-roughness)."""
    visual = mesh.visual  # the material is read from the original: splitting drops it when there are no uvs
    smooth = mesh.smooth_shaded if len(mesh.faces) > 1 else mesh
    part = MeshPart(
        vertices=np.asarray(smooth.vertices, dtype=np.float64),
        faces=np.asarray(smooth.faces, dtype=np.int64),
        normals=np.asarray(smooth.vertex_normals, dtype=np.float64),
    )
    if visual.kind in ("vertex", "face"):
        part.vertex_colors = np.asarray(smooth.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
        part.basecolor_factor = (1.0, 1.0, 1.0)
        return part
    material = getattr(visual, "material", None)
    if material is None:
        return part
    if not hasattr(material, "baseColorFactor"):  # SimpleMaterial (OBJ/MTL): trimesh's conversion
        material = material.to_pbr()
    factor = material.baseColorFactor
    if factor is not None:
        factor = np.asarray(factor, dtype=np.float64)[:3]
        part.basecolor_factor = tuple((factor / 255.0 if factor.max() > 1.0 else factor).tolist())
    has_texture = material.metallicRoughnessTexture is not None
    part.roughness = _factor(material.roughnessFactor, 1.0 if has_texture else 0.5)
    part.metallic = _factor(material.metallicFactor, 1.0 if has_texture else 0.0)
    uv = getattr(smooth.visual, "uv", None)
    if uv is not None and len(uv) == len(part.vertices):
        part.uvs = np.asarray(uv, dtype=np.float64)
        part.basecolor_texture = _image_array(material.baseColorTexture)
        part.metal_rough_texture = _image_array(material.metallicRoughnessTexture)
    return part


def load_mesh(path: str | Path) -> list[MeshPart]:
    """Every triangle geometry of a mesh file, with the file's scene transforms applied.

    Raises InputError (one line, naming the file) for missing, unreadable or empty meshes.
    """
    try:
        import trimesh
    except ImportError:
        hint = "object insertion needs trimesh and Mitsuba 3: pip install 'diffusion-renderer[data]'"
        raise ImportError(hint) from None

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such mesh file")
    try:
        scene = trimesh.load(path, force="scene")
        meshes = [g for g in scene.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
    except Exception as exc:  # trimesh raises many types for malformed files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"cannot read the mesh ({reason})") from None
    meshes = [m for m in meshes if len(m.faces) > 0]
    if not meshes:
        raise InputError(path, "the file holds no triangles")
    parts = [_part(m) for m in meshes]
    if not all(np.isfinite(p.vertices).all() for p in parts):
        raise InputError(path, "the mesh has non-finite vertex positions")
    return parts


def override_material(
    parts: list[MeshPart],
    basecolor: tuple[float, float, float] | None = None,
    roughness: float | None = None,
    metallic: float | None = None,
) -> list[MeshPart]:
    """Parts with the given material values in place of the file's (``basecolor`` sRGB; None keeps the file's)."""
    out = []
    for part in parts:
        if basecolor is not None:
            linear = tuple(srgb_to_linear(np.asarray(basecolor, dtype=np.float64)).tolist())
            part = replace(part, basecolor_factor=linear, basecolor_texture=None, vertex_colors=None)
        if roughness is not None or metallic is not None:
            part = replace(
                part,
                roughness=part.roughness if roughness is None else float(roughness),
                metallic=part.metallic if metallic is None else float(metallic),
                metal_rough_texture=None,
            )
        out.append(part)
    return out


def bounds(parts: list[MeshPart]) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) corners (3,) of all parts' vertices."""
    stacked = np.concatenate([p.vertices for p in parts])
    return stacked.min(axis=0), stacked.max(axis=0)


# ------------------------------------------------------------------------------------------------ rasterization


def _bitmap_texture(mi: Any, data: np.ndarray) -> dict[str, Any]:
    """Raw (already linear) bilinear, repeating bitmap texture."""
    return {
        "type": "bitmap",
        "bitmap": mi.Bitmap(np.ascontiguousarray(data, dtype=np.float32)),
        "raw": True,
        "filter_type": "bilinear",
        "wrap_mode": "repeat",
    }


def _principled(mi: Any, part: MeshPart) -> dict[str, Any]:
    """Mitsuba principled BSDF of a part; colours go in as linear reflectance (the G-buffer converts back)."""
    factor = np.asarray(part.basecolor_factor, dtype=np.float64)
    if part.basecolor_texture is not None and part.uvs is not None:
        base: dict[str, Any] = _bitmap_texture(mi, srgb_to_linear(part.basecolor_texture) * factor)
    elif part.vertex_colors is not None:
        base = {"type": "mesh_attribute", "name": "vertex_color"}  # linear values are set on the mesh
    else:
        base = {"type": "rgb", "value": factor.tolist()}
    rough: Any = part.roughness
    metal: Any = part.metallic
    if part.metal_rough_texture is not None and part.uvs is not None:
        rough = _bitmap_texture(mi, part.metal_rough_texture[..., 1:2] * part.roughness)
        metal = _bitmap_texture(mi, part.metal_rough_texture[..., 2:3] * part.metallic)
    return {"type": "principled", "base_color": base, "roughness": rough, "metallic": metal}


def _mitsuba_mesh(mi: Any, name: str, part: MeshPart, to_camera: np.ndarray) -> Any:
    """Camera-space Mitsuba mesh of a part (normals by the inverse transpose)."""
    verts = part.vertices @ to_camera[:3, :3].T + to_camera[:3, 3]
    normals = part.normals @ np.linalg.inv(to_camera[:3, :3])  # rows: n^T M^-1 = (M^-T n)^T
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    props = mi.Properties()
    props["bsdf"] = mi.load_dict(_principled(mi, part))
    has_uv = part.uvs is not None
    mesh = mi.Mesh(name, len(verts), len(part.faces), props, has_vertex_normals=True, has_vertex_texcoords=has_uv)
    if part.vertex_colors is not None:
        linear = srgb_to_linear(np.clip(part.vertex_colors, 0.0, 1.0)) * np.asarray(part.basecolor_factor)
        mesh.add_attribute("vertex_color", 3, linear.astype(np.float32).ravel())
    params = mi.traverse(mesh)
    params["vertex_positions"] = verts.astype(np.float32).ravel()
    params["vertex_normals"] = normals.astype(np.float32).ravel()
    if has_uv:
        uv = np.stack([part.uvs[:, 0], 1.0 - part.uvs[:, 1]], axis=-1)  # Mitsuba's bitmaps: v = 0 at the top
        params["vertex_texcoords"] = uv.astype(np.float32).ravel()
    params["faces"] = part.faces.astype(np.uint32).ravel()
    params.update()
    return mesh


def rasterize_gbuffers(
    parts: list[MeshPart],
    object_to_camera: np.ndarray,
    height: int,
    width: int,
    fov_deg: float,
    variant: str = "auto",
) -> dict[str, np.ndarray]:
    """G-buffers (H, W, C) float32 of the parts seen by an OpenGL camera at the origin (vertical ``fov_deg``).

    ``object_to_camera`` (4, 4) places the object in the camera frame (+x right, +y up, looking down -z).
    Returns ``basecolor`` (sRGB), ``normal`` (camera frame, facing the camera), ``depth`` (planar z > 0),
    ``roughness``, ``metallic`` and ``mask``; all 0 where no part is hit. ``variant``: Mitsuba's ("auto": CUDA
    when usable, else the LLVM CPU backend).
    """
    from diffusion_renderer.data.mitsuba_render import load_mitsuba, primary_hits

    mi = load_mitsuba(variant)
    to_camera = np.asarray(object_to_camera, dtype=np.float64)
    shapes = {f"part_{i}": _mitsuba_mesh(mi, f"part_{i}", p, to_camera) for i, p in enumerate(parts)}
    scene = mi.load_dict({"type": "scene", **shapes})
    return primary_hits(mi, scene, np.eye(4), fov_deg, height, width).camera_gbuffers()
