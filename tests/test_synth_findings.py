"""Each planted finding changes a measurable image property where the truth says it is, compared
with the same case (same patient, position, spacing and noise) generated without it."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage

from engine.labels import ct_rate
from engine.synth import generate_case
from engine.synth.canvas import LOBES, LUNG, Tissue

SEED, SCALE = int(os.environ.get("RAD3D_SYNTH_TEST_SEED", "11")), 4.0
_cache: dict = {}


def pair(finding: str, opts: dict | None = None, seed: int = SEED):
    key = (finding, str(opts), seed)
    if key not in _cache:
        absent = generate_case(seed, None, SCALE)
        present = generate_case(seed, {finding: opts or {}}, SCALE)
        _cache[key] = (absent, present)
    return _cache[key]


def coords_mm(case):
    nx, ny, nz = case.hu.shape
    s = case.spacing
    return (np.arange(nx)[:, None, None] * s[0], np.arange(ny)[None, :, None] * s[1],
            np.arange(nz)[None, None, :] * s[2])


def ball(case, center_mm, radius_mm):
    x, y, z = coords_mm(case)
    c = center_mm
    return (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= radius_mm ** 2


def lung(case):
    return np.isin(case.tissue, list(LUNG))


def test_absent_and_present_share_everything_else():
    a, p = pair("Lung nodule")
    b = generate_case(SEED, None, SCALE)
    assert np.array_equal(a.hu, b.hu)
    assert a.hu.shape == p.hu.shape and a.spacing == p.spacing
    far = ~ball(p, p.truth[0]["center_mm"], p.truth[0]["size_mm"] / 2 + 3 * max(p.spacing))
    assert np.array_equal(a.hu[far], p.hu[far])


def test_medical_material_is_metal():
    a, p = pair("Medical material")
    t = p.truth[0]
    assert (a.hu > 1500).sum() == 0
    assert (p.hu > 1500).sum() >= 10
    assert p.hu[ball(p, t["center_mm"], 15)].max() > 1500


def test_arterial_calcification_on_aortic_wall():
    a, p = pair("Arterial wall calcification")
    aorta = a.tissue == Tissue.AORTA
    wall = ndimage.binary_dilation(aorta, iterations=2) & ~ndimage.binary_erosion(aorta, iterations=2)
    wall &= ~np.isin(a.tissue, [Tissue.BONE, Tissue.MARROW])
    assert (p.hu[wall] > 300).sum() >= (a.hu[wall] > 300).sum() + 4


def _ctr(case):
    g, an = case.grid, case.anatomy
    cx, cy, cz = [int(round((v - o) / s)) for v, o, s in zip(an.heart_center, g.origin, g.spacing)]
    sl = case.hu[:, :, cz]
    half = max(1, int(0.3 * an.heart_half_depth() / g.spacing[1]))
    best, lung_lo, lung_hi = 0, sl.shape[0], 0
    for y in range(cy - half, cy + half + 1):
        row = sl[:, y]
        soft = row > -300
        if not soft[cx]:
            continue
        lo = cx
        while lo > 0 and soft[lo - 1]:
            lo -= 1
        hi = cx
        while hi < len(row) - 1 and soft[hi + 1]:
            hi += 1
        best = max(best, hi - lo + 1)
        air = np.nonzero(row < -600)[0]
        inside = air[(air > 0)]
        if len(inside):
            body = np.nonzero(row > -500)[0]
            inner = inside[(inside > body.min()) & (inside < body.max())]
            if len(inner):
                lung_lo, lung_hi = min(lung_lo, inner.min()), max(lung_hi, inner.max())
    return best / (lung_hi - lung_lo + 1)


def test_cardiomegaly_heart_to_thorax_ratio():
    a, p = pair("Cardiomegaly")
    assert _ctr(a) < 0.5 < _ctr(p)
    assert p.truth[0]["ratio"] > 0.5


def test_pericardial_effusion_fluid_rim():
    a, p = pair("Pericardial effusion")
    rim = p.tissue == Tissue.PERICARDIAL_FLUID
    assert rim.sum() > 50
    assert -15 < p.hu[rim].mean() < 35
    assert a.hu[rim].mean() < p.hu[rim].mean() - 60  # fat and lung there without the effusion


def test_coronary_calcification_on_heart_surface():
    a, p = pair("Coronary artery wall calcification")
    heart = a.tissue == Tissue.HEART
    surface = ndimage.binary_dilation(heart, iterations=2) & ~ndimage.binary_erosion(heart, iterations=2)
    surface &= ~np.isin(a.tissue, [Tissue.BONE, Tissue.MARROW, Tissue.AORTA])
    assert (p.hu[surface] > 250).sum() >= (a.hu[surface] > 250).sum() + 3


def test_hiatal_hernia_sac_with_air_and_fluid():
    a, p = pair("Hiatal hernia")
    t = p.truth[0]
    sac = ball(p, t["center_mm"], 0.85 * min(t["radii_mm"]))
    assert (p.hu[sac] < -900).mean() > 0.05
    assert (np.abs(p.hu[sac] - 15) < 60).mean() > 0.2
    assert (a.hu[sac] < -900).mean() < 0.02


def test_lymphadenopathy_soft_tissue_nodes():
    a, p = pair("Lymphadenopathy", {"count": 3})
    t = p.truth[0]
    for part in t["parts"]:
        assert part["size_mm"] > 10
        core = ball(p, part["center_mm"], 0.3 * part["size_mm"])
        assert core.any()
        assert 10 < p.hu[core].mean() < 80, part
        assert p.hu[core].mean() > a.hu[core].mean() + 30, part


def test_emphysema_lowers_lung_attenuation():
    a, p = pair("Emphysema")
    z0, z1 = p.truth[0]["z_range_mm"]
    _, _, z = coords_mm(p)
    m = lung(a) & (z >= z0) & (z <= z1)
    assert p.hu[m].mean() < a.hu[m].mean() - 40
    assert (p.hu[m] < -950).mean() > (a.hu[m] < -950).mean() + 0.05


def test_atelectasis_dense_basal_wedge():
    a, p = pair("Atelectasis", {"side": "left"})
    t = p.truth[0]
    assert t["side"] == "left" and t["lobes"] == ["LLL"]
    core = ball(p, t["center_mm"], 0.6 * min(t["parts"][0]["radii_mm"]) + 0.5 * max(p.spacing))
    assert p.hu[core].mean() > -300
    assert a.hu[core].mean() < -600


@pytest.mark.parametrize("lobe,diameter", [("RUL", 12.0), ("LLL", 20.0), ("RML", 15.0)])
def test_nodule_size_and_location(lobe, diameter):
    a, p = pair("Lung nodule", {"lobe": lobe, "diameter_mm": diameter})
    t = p.truth[0]
    assert t["lobe"] == lobe
    i, j, k = t["center_voxel"]
    assert a.tissue[i, j, k] == LOBES[lobe]
    region = ball(p, t["center_mm"], 1.6 * diameter / 2 + max(p.spacing))
    diff = (p.hu - a.hu)[region]
    inside = ball(p, t["center_mm"], diameter / 2)
    contrast = t["hu"] - np.median(a.hu[region])
    volume = diff.sum() / contrast * np.prod(p.spacing)
    d_est = (6 * volume / np.pi) ** (1 / 3)
    assert abs(d_est - diameter) <= 0.3 * diameter, d_est
    x, y, z = coords_mm(p)
    w = np.clip(p.hu - a.hu, 0, None) * region
    centroid = [float((c * w).sum() / w.sum()) for c in np.broadcast_arrays(x, y, z)]
    assert np.linalg.norm(np.subtract(centroid, t["center_mm"])) < 0.3 * diameter + max(p.spacing) / 2
    assert inside.any()


def test_lung_opacity_ground_glass():
    a, p = pair("Lung opacity")
    for part in p.truth[0]["parts"]:
        core = ball(p, part["center_mm"], 0.3 * part["size_mm"]) & lung(a)
        assert core.any()
        assert -720 < np.median(p.hu[core]) < -350
        assert np.median(p.hu[core]) > np.median(a.hu[core]) + 150


def test_fibrotic_bands_are_dense_lines():
    a, p = pair("Pulmonary fibrotic sequela")
    gained = 0.0
    for part in p.truth[0]["parts"]:
        near = ball(p, part["center_mm"], part["size_mm"] / 2)
        gained += ((p.hu > -500) & near).sum() - ((a.hu > -500) & near).sum()
    assert gained >= len(p.truth[0]["parts"]) * 2


@pytest.mark.parametrize("side", ["right", "left", "bilateral"])
def test_pleural_effusion_fluid_on_stated_side(side):
    a, p = pair("Pleural effusion", {"side": side})
    x, _, _ = coords_mm(p)
    mid = p.grid.to_volume_mm([0.0, 0.0, 0.0])[0]
    # Patient right is the low-x half of the volume (axis 0 runs towards the left).
    halves = {"right": x < mid, "left": x > mid}
    fluid_p = (np.abs(p.hu - 12) < 45) & lung(a)
    fluid_a = (np.abs(a.hu - 12) < 45) & lung(a)
    for s, half in halves.items():
        gain = (fluid_p & half).sum() - (fluid_a & half).sum()
        if side in (s, "bilateral"):
            assert gain > 100, (s, gain)
            ys = np.nonzero(fluid_p & ~fluid_a & half)[1]
            assert ys.mean() > np.nonzero(lung(a) & half)[1].mean()  # dependent: posterior
        else:
            assert gain == 0, (s, gain)


def test_mosaic_attenuation_patchy_density():
    a, p = pair("Mosaic attenuation pattern", {"distribution": "diffuse"})
    m = lung(a)
    diff = (p.hu - a.hu)[m]
    assert diff.std() > 40
    assert (diff > 40).mean() > 0.15 and (diff < -40).mean() > 0.15


def test_peribronchial_thickening_walls():
    a, p = pair("Peribronchial thickening")
    lumen = a.tissue == Tissue.AIRWAY
    ring = ndimage.binary_dilation(lumen, iterations=1) & ~lumen & lung(a) | (a.tissue == Tissue.AIRWAY_WALL)
    assert p.hu[ring].mean() > a.hu[ring].mean() + 50


def test_consolidation_dense_in_stated_lobe_only():
    a, p = pair("Consolidation", {"lobe": "RLL"})
    t = p.truth[0]
    core = ball(p, t["center_mm"], 0.4 * min(t["radii_mm"])) & (a.tissue == Tissue.RLL)
    assert core.any()
    assert np.median(p.hu[core]) > -100 and np.median(a.hu[core]) < -600
    other = np.isin(a.tissue, [Tissue.RUL, Tissue.RML, Tissue.LUL, Tissue.LLL])
    assert np.abs(p.hu - a.hu)[other].max() < 1e-3
    region = ball(p, t["center_mm"], 0.9 * min(t["radii_mm"])) & (a.tissue == Tissue.RLL)
    assert (p.hu[region] < -400).sum() >= 1  # air bronchograms


def test_bronchiectasis_dilated_airways_in_lobe():
    a, p = pair("Bronchiectasis", {"lobes": ["RLL"]})
    t = p.truth[0]
    assert t["size_mm"] > t["artery_mm"]
    lobe = a.tissue == Tissue.RLL
    assert (p.hu[lobe] < -900).sum() > (a.hu[lobe] < -900).sum() + 10
    other = a.tissue == Tissue.LUL
    assert (p.hu[other] < -900).sum() == (a.hu[other] < -900).sum()


def test_septal_thickening_peripheral_network():
    a, p = pair("Interlobular septal thickening", {"distribution": "diffuse"})
    m = lung(a)
    diff = (p.hu - a.hu)
    an, g = a.anatomy, a.grid
    x, y, z = coords_mm(a)
    px, py = x + g.origin[0], y + g.origin[1]
    q = np.hypot(px / an.cav_ax, (py - an.cav_cy) / an.cav_ay)
    periphery = m & (q > 0.85)
    centre = m & (q < 0.5)
    assert diff[periphery].mean() > 40
    assert diff[periphery].mean() > 3 * abs(diff[centre].mean()) + 20
    assert (diff[periphery] > 100).mean() > 0.1


def test_every_label_has_a_planter_test():
    names = set(ct_rate().names)
    tested = {"Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
              "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
              "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
              "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
              "Interlobular septal thickening"}
    assert names == tested
