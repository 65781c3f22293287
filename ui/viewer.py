"""View logic for the CT viewer, free of any UI toolkit: windowing, reslicing along the three
planes with the voxel spacing's aspect ratio, orientation letters and a crosshair.

Volumes are in rad3d's canonical voxel order (axis 0 → patient Left, 1 → Posterior, 2 → Superior).
Images follow the radiological convention: the patient's right on the image's left, anterior at
the top of axial images, superior at the top of coronal and sagittal images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PLANES = ("axial", "coronal", "sagittal")

# Window presets in HU as (width, level).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 40.0),
    "bone": (1800.0, 400.0),
    "abdomen": (400.0, 50.0),
}

# Letters on the (top, bottom, left, right) edges of each plane's image.
ORIENTATION_LETTERS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}

# Which volume axis each plane's slider moves along.
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """HU → uint8 grey levels: level − width/2 maps to 0 and level + width/2 to 255."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = level - width / 2.0
    scaled = (hu.astype(np.float32) - low) * (255.0 / width)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def plane_slice(hu: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2-D slice of a canonical (L, P, S) volume as it is displayed (rows top→bottom)."""
    axis = PLANE_AXIS[plane]
    n = hu.shape[axis]
    if not 0 <= index < n:
        raise IndexError(f"{plane} slice {index} outside 0..{n - 1}")
    if plane == "axial":  # rows: anterior→posterior (y), columns: right→left (x)
        return hu[:, :, index].T
    if plane == "coronal":  # rows: superior→inferior (z reversed), columns: right→left (x)
        return hu[:, index, :].T[::-1]
    return hu[index, :, :].T[::-1]  # sagittal: rows superior→inferior, columns anterior→posterior


def pixel_spacing(spacing_mm: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """(row, column) pixel size in mm of a displayed plane."""
    sx, sy, sz = spacing_mm
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[plane]


def display_size(shape2d: tuple[int, int], spacing_rc: tuple[float, float], max_side: int = 512) -> tuple[int, int]:
    """(width, height) in screen pixels giving square physical pixels, the longer side max_side."""
    height_mm = shape2d[0] * spacing_rc[0]
    width_mm = shape2d[1] * spacing_rc[1]
    scale = max_side / max(height_mm, width_mm)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


@dataclass(frozen=True)
class Crosshair:
    """A point in voxel coordinates (x, y, z) shared by the three planes."""

    x: int
    y: int
    z: int

    def index(self, plane: str) -> int:
        return (self.x, self.y, self.z)[PLANE_AXIS[plane]]

    def in_plane(self, plane: str, shape: tuple[int, int, int]) -> tuple[int, int]:
        """(row, column) of the crosshair in the displayed image of `plane` (before resizing)."""
        nz = shape[2]
        if plane == "axial":
            return self.y, self.x
        if plane == "coronal":
            return nz - 1 - self.z, self.x
        return nz - 1 - self.z, self.y


def render_plane(
    hu: np.ndarray,
    spacing_mm: tuple[float, float, float],
    plane: str,
    crosshair: Crosshair,
    width: float,
    level: float,
    *,
    max_side: int = 512,
    show_crosshair: bool = True,
    overlay: np.ndarray | None = None,
    opacity: float = 0.5,
) -> Image.Image:
    """One plane as an RGB image with square physical pixels, a crosshair and edge letters;
    `overlay`: a map in [0, 1] on the volume's grid drawn over it in colour (blend_overlay)."""
    grey = window(plane_slice(hu, plane, crosshair.index(plane)), width, level)
    size = display_size(grey.shape, pixel_spacing(spacing_mm, plane), max_side)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if overlay is not None:
        rgb = blend_overlay(rgb, plane_slice(overlay, plane, crosshair.index(plane)), opacity)
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").resize(size, Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    if show_crosshair:
        row, col = crosshair.in_plane(plane, hu.shape)
        sy = size[1] / grey.shape[0]
        sx = size[0] / grey.shape[1]
        cy, cx = (row + 0.5) * sy, (col + 0.5) * sx
        draw.line([(0, cy), (size[0], cy)], fill=(255, 200, 0), width=1)
        draw.line([(cx, 0), (cx, size[1])], fill=(255, 200, 0), width=1)
    draw_orientation_letters(draw, plane, size)
    return image


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[0, 1] → RGB uint8 along black-body colours (dark red → red → yellow → white)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0.0, 1.0)
    return (np.maximum(rgb, np.array([0.35, 0.0, 0.0]) * (v > 0)) * 255).astype(np.uint8)


def blend_overlay(rgb: np.ndarray, values: np.ndarray, opacity: float) -> np.ndarray:
    """An (H, W, 3) uint8 image with a [0, 1] map laid over it: each pixel's colour weight is
    opacity × its value, so where there is no evidence the image shows unchanged."""
    alpha = (float(np.clip(opacity, 0.0, 1.0)) * np.clip(values, 0.0, 1.0))[..., None]
    out = rgb.astype(np.float32) * (1 - alpha) + heat_colours(values).astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


LETTER_COLOUR = (0, 255, 255)


def letter_size(size: tuple[int, int]) -> int:
    """Font size of the edge letters: legible on small images, not dominating large ones."""
    return max(14, min(28, round(min(size) / 16)))


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def draw_orientation_letters(draw: ImageDraw.ImageDraw, plane: str, size: tuple[int, int]) -> None:
    """The plane's four edge letters, centred on each edge, cyan with a black outline so they read
    on bone as on air."""
    top, bottom, left, right = ORIENTATION_LETTERS[plane]
    w, h = size
    font = _font(letter_size(size))
    pad = 3
    anchors = ((top, (w / 2, pad), "mt"), (bottom, (w / 2, h - pad), "mb"),
               (left, (pad, h / 2), "lm"), (right, (w - pad, h / 2), "rm"))
    for text, xy, anchor in anchors:
        draw.text(xy, text, fill=LETTER_COLOUR, font=font, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))


def clamp_crosshair(shape: tuple[int, int, int], x: float, y: float, z: float) -> Crosshair:
    """A crosshair inside the volume, whatever (possibly stale) slider values came in."""
    return Crosshair(*(min(max(int(v), 0), n - 1) for v, n in zip((x, y, z), shape)))


def render_views(hu: np.ndarray, spacing_mm: tuple[float, float, float], crosshair: Crosshair,
                 width: float, level: float, *, max_side: int = 512, overlay: np.ndarray | None = None,
                 opacity: float = 0.5) -> list[Image.Image]:
    """The three planes (PLANES order) through one crosshair: what the page redraws on any change."""
    return [render_plane(hu, spacing_mm, p, crosshair, width, level, max_side=max_side, overlay=overlay,
                         opacity=opacity) for p in PLANES]
