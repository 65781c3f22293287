"""Painting ordered layers of shapes onto a voxel grid: the phantom's renderer.

A layer is a shape, the HU it carries (a constant or a function of position) and the tissue code
it leaves behind. Layers paint in `order` like a painter (later ones cover earlier ones), blended
by partial-volume occupancy. `only` restricts a layer to voxels whose current tissue is in a set,
which is how e.g. a pleural effusion fills lung but never the chest wall.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from engine.synth.shapes import Shape


class Tissue(IntEnum):
    AIR = 0
    TABLE = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4
    MARROW = 5
    MEDIASTINUM = 6
    HEART = 7
    PERICARDIAL_FLUID = 8
    AORTA = 9
    VESSEL = 10
    AIRWAY = 11
    AIRWAY_WALL = 12
    ESOPHAGUS = 13
    ABDOMEN = 14
    LIVER = 15
    STOMACH = 16
    SPINAL_CANAL = 17
    PLEURAL_FLUID = 18
    LESION = 19
    RUL = 20
    RML = 21
    RLL = 22
    LUL = 23
    LLL = 24
    EMBOLUS = 25  # a filling defect in a contrast-filled artery (the inspect-like domain)
    CALCIUM = 30
    METAL = 31


LOBES = {"RUL": Tissue.RUL, "RML": Tissue.RML, "RLL": Tissue.RLL, "LUL": Tissue.LUL, "LLL": Tissue.LLL}
LUNG = frozenset(int(t) for t in LOBES.values())
RIGHT_LUNG = frozenset({int(Tissue.RUL), int(Tissue.RML), int(Tissue.RLL)})
LEFT_LUNG = frozenset({int(Tissue.LUL), int(Tissue.LLL)})

Value = float | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Layer:
    shape: Shape
    hu: Value
    tissue: int | Callable | None = None  # None keeps the tissue code underneath
    order: float = 0.0
    only: frozenset[int] | None = None
    add: bool = False  # add `hu` (scaled by occupancy) instead of replacing


@dataclass(frozen=True)
class Grid:
    """Voxel grid in the patient frame: voxel (i, j, k) has its centre at origin + (i, j, k)·spacing."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axis(self, k: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        hi = self.shape[k] if hi is None else hi
        return (self.origin[k] + np.arange(lo, hi) * self.spacing[k]).astype(np.float32)

    def index_box(self, bounds) -> tuple[slice, slice, slice] | None:
        if bounds is None:
            return tuple(slice(0, n) for n in self.shape)  # type: ignore[return-value]
        lo, hi = bounds
        box = []
        for k in range(3):
            a = int(np.floor((lo[k] - self.origin[k]) / self.spacing[k])) - 1
            b = int(np.ceil((hi[k] - self.origin[k]) / self.spacing[k])) + 2
            a, b = max(a, 0), min(b, self.shape[k])
            if a >= b:
                return None
            box.append(slice(a, b))
        return tuple(box)  # type: ignore[return-value]

    def to_volume_mm(self, p) -> list[float]:
        """Patient-frame mm → mm from the centre of voxel (0, 0, 0) along the volume axes."""
        return [round(float(v - o), 2) for v, o in zip(p, self.origin)]

    def to_voxel(self, p) -> list[int]:
        return [int(round((v - o) / s)) for v, o, s in zip(p, self.origin, self.spacing)]


def render(layers: list[Layer], grid: Grid, chunk_voxels: int = 1 << 21) -> tuple[np.ndarray, np.ndarray]:
    """Paint `layers` (stable-sorted by order) on `grid`; returns (hu float32, tissue uint8)."""
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    for layer in sorted(layers, key=lambda la: la.order):
        box = grid.index_box(layer.shape.bounds())
        if box is None:
            continue
        sx, sy, sz = box
        plane = (sx.stop - sx.start) * (sy.stop - sy.start)
        step = max(1, chunk_voxels // max(plane, 1))
        x = grid.axis(0, sx.start, sx.stop)[:, None, None]
        y = grid.axis(1, sy.start, sy.stop)[None, :, None]
        for z0 in range(sz.start, sz.stop, step):
            z1 = min(z0 + step, sz.stop)
            z = grid.axis(2, z0, z1)[None, None, :]
            _paint(layer, grid.spacing, x, y, z, hu[sx, sy, z0:z1], tissue[sx, sy, z0:z1])
    return hu, tissue


def _paint(layer: Layer, spacing, x, y, z, hu: np.ndarray, tissue: np.ndarray) -> None:
    occ = np.broadcast_to(layer.shape.occupancy(x, y, z, spacing), hu.shape)
    if layer.only is not None:
        occ = occ * np.isin(tissue, list(layer.only))
    if not occ.any():
        return
    value = layer.hu(x, y, z) if callable(layer.hu) else layer.hu
    if layer.add:
        hu += occ * value
    else:
        hu += occ * (value - hu)
    if layer.tissue is not None:
        inside = occ > 0.5
        if callable(layer.tissue):
            codes = np.broadcast_to(layer.tissue(x, y, z), hu.shape)
            tissue[inside] = codes[inside]
        else:
            tissue[inside] = layer.tissue
