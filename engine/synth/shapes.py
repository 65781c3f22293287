"""Solid shapes in millimetres with partial-volume edges.

Every shape answers `occupancy(x, y, z, spacing)`: the fraction (0..1) of each voxel centred at
(x, y, z) that lies inside it. Primitives derive it from an approximate signed distance `d` and
the outward normal `n`: a voxel of size s spans w = Σ|n_i|·s_i along the normal, so
occupancy = clip(0.5 − d/w, 0, min(1, thickness/w)). The thickness cap keeps structures thinner
than a voxel (small vessels, plaques) from being painted as if they filled it, so the same
geometry renders plausibly at 0.7 mm and at 4 mm voxels.

Coordinates are broadcastable arrays (open grids), frame x→Left, y→Posterior, z→Superior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Bounds = tuple[np.ndarray, np.ndarray]
_EPS = 1e-6


def _soft(d, w, thickness=None):
    occ = 0.5 - d / w
    if thickness is not None:
        occ = np.minimum(occ, thickness / w)
    return np.clip(occ, 0.0, 1.0).astype(np.float32, copy=False)


def _width(nx, ny, nz, spacing) -> np.ndarray:
    return np.abs(nx) * spacing[0] + np.abs(ny) * spacing[1] + np.abs(nz) * spacing[2] + _EPS


class Shape:
    def bounds(self) -> Bounds | None:
        """Axis-aligned (lo, hi) box in mm outside which occupancy is 0; None = unbounded."""
        return None

    def occupancy(self, x, y, z, spacing) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Ellipsoid(Shape):
    """An ellipsoid; `axes` (3×3, columns = unit local axes) rotates it, None = axis-aligned."""

    center: np.ndarray
    radii: np.ndarray
    axes: np.ndarray | None = None

    def __post_init__(self):
        self.center = np.asarray(self.center, float)
        self.radii = np.asarray(self.radii, float)

    def bounds(self) -> Bounds:
        if self.axes is None:
            half = self.radii
        else:  # exact half-extent of a rotated ellipsoid along each world axis
            half = np.sqrt(((self.axes * self.radii[None, :]) ** 2).sum(axis=1))
        return self.center - half, self.center + half

    def occupancy(self, x, y, z, spacing):
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        if self.axes is None:
            u = (dx / self.radii[0], dy / self.radii[1], dz / self.radii[2])
        else:
            a = self.axes
            u = tuple((dx * a[0, k] + dy * a[1, k] + dz * a[2, k]) / self.radii[k] for k in range(3))
        q = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2) + _EPS
        gl = [u[k] / (self.radii[k] * q) for k in range(3)]  # ∇q in local coordinates
        if self.axes is None:
            g = gl
        else:
            g = [gl[0] * a[i, 0] + gl[1] * a[i, 1] + gl[2] * a[i, 2] for i in range(3)]
        gn = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2) + _EPS
        d = (q - 1.0) / gn
        w = _width(g[0] / gn, g[1] / gn, g[2] / gn, spacing)
        return _soft(d, w, 2.0 * float(self.radii.min()))


def sphere(center, radius: float) -> Ellipsoid:
    return Ellipsoid(np.asarray(center, float), np.full(3, float(radius)))


@dataclass
class Capsule(Shape):
    """A tube from a to b whose radius goes linearly from ra to rb, with rounded ends."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float | None = None

    def __post_init__(self):
        self.a = np.asarray(self.a, float)
        self.b = np.asarray(self.b, float)
        if self.rb is None:
            self.rb = self.ra

    def bounds(self) -> Bounds:
        r = max(self.ra, self.rb)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def occupancy(self, x, y, z, spacing):
        ab = self.b - self.a
        length2 = float(ab @ ab) + _EPS
        px, py, pz = x - self.a[0], y - self.a[1], z - self.a[2]
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / length2, 0.0, 1.0)
        vx, vy, vz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
        dist = np.sqrt(vx * vx + vy * vy + vz * vz) + _EPS
        r = self.ra + t * (self.rb - self.ra)
        w = _width(vx / dist, vy / dist, vz / dist, spacing)
        return _soft(dist - r, w, 2.0 * r)


def tube(points, radius: float | list[float]) -> list[Capsule]:
    """A polyline tube as capsules; `radius` is one value or one per point."""
    pts = np.asarray(points, float)
    radii = np.broadcast_to(np.asarray(radius, float), (len(pts),))
    return [Capsule(pts[i], pts[i + 1], float(radii[i]), float(radii[i + 1])) for i in range(len(pts) - 1)]


@dataclass
class EllipticCylinder(Shape):
    """An elliptic cylinder along z, from z0 to z1. `profile(z)` (optional) scales both
    semi-axes with height, e.g. to close the thorax towards the lung apices."""

    cx: float
    cy: float
    ax: float
    ay: float
    z0: float = -1e9
    z1: float = 1e9
    profile: Callable[[np.ndarray], np.ndarray] | None = None

    def bounds(self) -> Bounds | None:
        lo = np.array([self.cx - self.ax, self.cy - self.ay, self.z0])
        hi = np.array([self.cx + self.ax, self.cy + self.ay, self.z1])
        return lo, hi

    def occupancy(self, x, y, z, spacing):
        f = 1.0 if self.profile is None else np.maximum(self.profile(z), 1e-3)
        ax, ay = self.ax * f, self.ay * f
        ux, uy = (x - self.cx) / ax, (y - self.cy) / ay
        q = np.sqrt(ux * ux + uy * uy) + _EPS
        gx, gy = ux / (ax * q), uy / (ay * q)
        gn = np.sqrt(gx * gx + gy * gy) + _EPS
        d_xy = (q - 1.0) / gn
        w_xy = _width(gx / gn, gy / gn, 0.0, spacing)
        occ = _soft(d_xy, w_xy)
        if self.z0 > -1e8 or self.z1 < 1e8:
            d_z = np.maximum(self.z0 - z, z - self.z1)
            occ = occ * _soft(d_z, spacing[2])
        return occ


@dataclass
class Box(Shape):
    """An axis-aligned box."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self):
        self.lo = np.asarray(self.lo, float)
        self.hi = np.asarray(self.hi, float)

    def bounds(self) -> Bounds:
        return self.lo, self.hi

    def occupancy(self, x, y, z, spacing):
        occ = None
        for k, c in enumerate((x, y, z)):
            d = np.maximum(self.lo[k] - c, c - self.hi[k])
            o = _soft(d, spacing[k], self.hi[k] - self.lo[k])
            occ = o if occ is None else occ * o
        return occ


@dataclass
class BelowSurface(Shape):
    """Everything below a height field z = surface(x, y) (the diaphragm)."""

    surface: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def occupancy(self, x, y, z, spacing):
        return _soft(z - self.surface(x, y), spacing[2])


@dataclass
class HalfSpace(Shape):
    """Points p with normal·p <= offset."""

    normal: np.ndarray
    offset: float

    def occupancy(self, x, y, z, spacing):
        n = np.asarray(self.normal, float) / np.linalg.norm(self.normal)
        d = x * n[0] + y * n[1] + z * n[2] - self.offset
        return _soft(d, _width(n[0], n[1], n[2], spacing))


@dataclass
class Intersection(Shape):
    parts: tuple[Shape, ...]

    def bounds(self) -> Bounds | None:
        lo, hi = None, None
        for p in self.parts:
            b = p.bounds()
            if b is None:
                continue
            lo = b[0] if lo is None else np.maximum(lo, b[0])
            hi = b[1] if hi is None else np.minimum(hi, b[1])
        return None if lo is None else (lo, hi)

    def occupancy(self, x, y, z, spacing):
        occ = self.parts[0].occupancy(x, y, z, spacing)
        for p in self.parts[1:]:
            occ = occ * p.occupancy(x, y, z, spacing)
        return occ


@dataclass
class Difference(Shape):
    """Inside `keep` and outside `cut`."""

    keep: Shape
    cut: Shape

    def bounds(self) -> Bounds | None:
        return self.keep.bounds()

    def occupancy(self, x, y, z, spacing):
        return self.keep.occupancy(x, y, z, spacing) * (1.0 - self.cut.occupancy(x, y, z, spacing))


@dataclass
class Shifted(Shape):
    """`shape` moved by `offset` mm."""

    shape: Shape
    offset: np.ndarray

    def bounds(self) -> Bounds | None:
        b = self.shape.bounds()
        return None if b is None else (b[0] + self.offset, b[1] + self.offset)

    def occupancy(self, x, y, z, spacing):
        o = self.offset
        return self.shape.occupancy(x - o[0], y - o[1], z - o[2], spacing)
