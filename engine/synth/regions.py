"""Phantoms of body regions other than the chest (head, abdomen, pelvis), drawn with the same
shapes and renderer as the chest phantoms, in the same frame (x → Left, y → Posterior,
z → Superior, HU). They carry no findings and no report: they exist so that the domain guard
(engine.domain) is tested on scans a chest model was never made for. The abdomen reaches the
lung bases in its top slices, as real abdominal CTs do.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError
from engine.synth.canvas import Grid, Layer, Tissue, render
from engine.synth.shapes import Difference, Ellipsoid, EllipticCylinder, sphere
from engine.volume import Volume

REGIONS = ("head", "abdomen", "pelvis")


def _e(center, radii) -> Ellipsoid:
    return Ellipsoid(np.asarray(center, float), np.asarray(radii, float))


def _head(rng) -> tuple[list[Layer], tuple[float, float, float], tuple[float, float]]:
    s = rng.uniform(0.9, 1.1)
    r = np.array([72, 92, 95]) * s
    skull_in = r - rng.uniform(6, 9)
    layers = [
        Layer(_e((0, 0, 0), r + 4), 30.0, Tissue.MUSCLE, 1),          # scalp
        Layer(_e((0, 0, 0), r), 1100.0, Tissue.BONE, 2),              # skull
        Layer(_e((0, 0, 0), skull_in), 35.0, Tissue.MEDIASTINUM, 3),  # brain
        Layer(_e((0, 0, 10), (8, 25, 12)), 5.0, Tissue.MEDIASTINUM, 4),   # ventricles
        Layer(_e((0, -r[1] + 20, -r[2] + 35), (20, 14, 14)), -950.0, Tissue.AIR, 5),  # sinuses
        Layer(_e((0, -r[1] - 5, -r[2] + 5), (30, 25, 40)), 40.0, Tissue.MUSCLE, 1),   # face
    ]
    return layers, (2 * r[0] + 40, 2 * r[1] + 50, 2 * r[2] + 10), (-r[2] - 20, r[2] + 5)


def _abdomen(rng) -> tuple[list[Layer], tuple[float, float, float], tuple[float, float]]:
    ax, ay = rng.uniform(140, 175), rng.uniform(100, 125)
    top = rng.uniform(40, 60)  # the lung bases reach this far into the field of view
    layers = [
        Layer(EllipticCylinder(0, 0, ax, ay), -100.0, Tissue.FAT, 1),
        Layer(EllipticCylinder(0, 0, ax - 15, ay - 15), 45.0, Tissue.MUSCLE, 2),
        Layer(EllipticCylinder(0, 0, ax - 25, ay - 25), 20.0, Tissue.ABDOMEN, 3),
        Layer(_e((-60, -10, 60), (70, 70, 80)), 60.0, Tissue.LIVER, 4),         # liver (right)
        Layer(_e((70, 20, 60), (35, 45, 50)), 50.0, Tissue.ABDOMEN, 4),         # spleen
        Layer(_e((-55, 45, -40), (25, 20, 50)), 35.0, Tissue.ABDOMEN, 4),       # kidneys
        Layer(_e((55, 45, -35), (25, 20, 50)), 35.0, Tissue.ABDOMEN, 4),
        Layer(EllipticCylinder(0, 55, 17, 17), 350.0, Tissue.BONE, 6),          # vertebrae
        Layer(EllipticCylinder(-5, 25, 10, 10), 45.0, Tissue.AORTA, 6),         # aorta
        # Lung bases behind the diaphragm domes, at the top of the field of view.
        Layer(_e((-70, 20, 120 + top), (60, 60, 120)), -850.0, Tissue.RLL, 7),
        Layer(_e((70, 20, 120 + top), (55, 60, 120)), -850.0, Tissue.LLL, 7),
    ]
    for _ in range(int(rng.integers(4, 9))):  # bowel gas pockets
        c = (rng.uniform(-70, 70), rng.uniform(-60, 0), rng.uniform(-100, 20))
        layers.append(Layer(sphere(c, rng.uniform(6, 16)), -950.0, Tissue.AIR, 5))
    return layers, (2 * ax + 40, 2 * ay + 40, 0), (-150.0, top + 70.0)


def _pelvis(rng) -> tuple[list[Layer], tuple[float, float, float], tuple[float, float]]:
    ax, ay = rng.uniform(160, 190), rng.uniform(100, 125)
    bone = 700.0
    layers = [
        Layer(EllipticCylinder(0, 0, ax, ay), -100.0, Tissue.FAT, 1),
        Layer(EllipticCylinder(0, 0, ax - 20, ay - 20), 45.0, Tissue.MUSCLE, 2),
        Layer(Difference(_e((-80, 20, 40), (40, 60, 70)), _e((-70, 10, 40), (30, 50, 60))), bone, Tissue.BONE, 4),
        Layer(Difference(_e((80, 20, 40), (40, 60, 70)), _e((70, 10, 40), (30, 50, 60))), bone, Tissue.BONE, 4),
        Layer(sphere((-90, 0, -60), 24), bone, Tissue.BONE, 4),                  # femoral heads
        Layer(sphere((90, 0, -60), 24), bone, Tissue.BONE, 4),
        Layer(EllipticCylinder(0, 70, 40, 20, -20, 120), bone, Tissue.BONE, 4),  # sacrum
        Layer(_e((0, -40, -20), (45, 40, 40)), 5.0, Tissue.ABDOMEN, 5),         # bladder
        Layer(sphere((0, 40, -20), rng.uniform(8, 14)), -950.0, Tissue.AIR, 6),  # rectal gas
    ]
    return layers, (2 * ax + 40, 2 * ay + 40, 0), (-120.0, 120.0)


_BUILDERS = {"head": _head, "abdomen": _abdomen, "pelvis": _pelvis}


def generate_region(region: str, seed: int = 0, *, spacing_mm=(1.5, 1.5, 3.0), noise: bool = True,
                    background_hu: float | None = None) -> Volume:
    """A non-chest phantom as a Volume in HU (canonical L, P, S order). `background_hu` stores
    the outside of the body as that constant (e.g. 0 or -3024), as some exports do."""
    if region not in _BUILDERS:
        raise ConfigError(f"unknown body region {region!r} (expected one of {list(REGIONS)})")
    rng = np.random.default_rng([int(seed), 77])
    layers, (fx, fy, _), (z0, z1) = _BUILDERS[region](rng)
    fov = max(fx, fy)
    n_xy = int(np.ceil(fov / spacing_mm[0]))
    n_z = int(np.ceil((z1 - z0) / spacing_mm[2])) + 1
    origin = (-(n_xy - 1) / 2 * spacing_mm[0], -(n_xy - 1) / 2 * spacing_mm[1], z0)
    grid = Grid((n_xy, n_xy, n_z), tuple(float(s) for s in spacing_mm), origin)
    hu, tissue = render(layers, grid)
    if noise:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(8, 15))
    np.clip(hu, -1024.0, 3071.0, out=hu)
    if background_hu is not None:
        hu[_outside_body(tissue)] = background_hu
    return Volume(hu, tuple(float(s) for s in spacing_mm), source=f"<{region} phantom, seed {seed}>",
                  meta={"body_region": region})


def _outside_body(tissue: np.ndarray) -> np.ndarray:
    """Air connected to the volume's border (what surrounds the patient)."""
    from scipy import ndimage

    air = tissue == Tissue.AIR
    labels, _ = ndimage.label(air)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()]))
    return np.isin(labels, border[border > 0])
