"""The 18 CT-RATE findings as planters: each may `adjust` the anatomy before it is drawn (a
bigger heart, thicker bronchial walls) and `plant` layers of its own, returning the truth
(what, where, how big) that the report and labels are written from.

Sizes are chosen to stay visible on a coarse grid (~3–4 mm in-plane, ~6–8 mm slices): nodules
8–25 mm, effusions 15–45 mm deep, plaques several mm. Options (the `opts` dict) override the
random choices; the keys each finding accepts are read at the top of its planter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from engine.errors import ConfigError
from engine.labels import LabelSet, ct_rate
from engine.synth.anatomy import ORDER_LUNG_AIRWAYS, Anatomy, Segment, _unit
from engine.synth.canvas import LEFT_LUNG, LOBES, LUNG, RIGHT_LUNG, Layer, Tissue
from engine.synth.shapes import (
    Capsule,
    Difference,
    Ellipsoid,
    EllipticCylinder,
    HalfSpace,
    Intersection,
    Shape,
    Shifted,
    sphere,
    tube,
)

LOBE_NAMES = {
    "RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe",
    "LUL": "left upper lobe", "LLL": "left lower lobe",
}
LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left"}
_LUNGISH = LUNG | {int(Tissue.VESSEL), int(Tissue.AIRWAY), int(Tissue.AIRWAY_WALL)}


def canonical_finding(name: str, label_set: LabelSet | None = None) -> str:
    """'lung_nodule', 'Lung nodule', 'LUNG-NODULE' → 'Lung nodule' (in `label_set`, CT-RATE's by default)."""
    names = (label_set or ct_rate()).names
    key = re.sub(r"[^a-z]", "", str(name).lower())
    for n in names:
        if re.sub(r"[^a-z]", "", n.lower()) == key:
            return n
    raise ConfigError(f"unknown finding {name!r} (known: {', '.join(names)})")


@dataclass(frozen=True)
class Planter:
    adjust: Callable[[Anatomy, np.random.Generator, dict], dict]
    plant: Callable[[Anatomy, np.random.Generator, dict], tuple[list[Layer], dict]]


def _keep(a, rng, opts):
    return dict(opts)


def _r(x) -> float:
    return round(float(x), 1)


def _pt(p) -> list[float]:
    return [float(v) for v in p]


def _pick_lobe(rng, opts, lobes=tuple(LOBES)) -> str:
    lobe = str(opts.get("lobe") or rng.choice(list(lobes))).upper()
    if lobe not in LOBES:
        raise ConfigError(f"unknown lobe {lobe!r} (use one of {', '.join(LOBES)})")
    return lobe


def _pick_side(rng, opts, p_bilateral=0.3) -> str:
    side = opts.get("side")
    if side is None:
        side = "bilateral" if rng.random() < p_bilateral else ("right" if rng.random() < 0.5 else "left")
    if side not in ("right", "left", "bilateral"):
        raise ConfigError(f"side must be right, left or bilateral, got {side!r}")
    return side


def _sides(side: str) -> list[str]:
    return ["right", "left"] if side == "bilateral" else [side]


def _point_in_lobe(a: Anatomy, rng, lobe: str, margin: float, tries: int = 4000) -> np.ndarray:
    """A random point of `lobe` at least `margin` mm inside the lung (analytic geometry)."""
    s = -1 if LOBE_SIDE[lobe] == "right" else 1
    for m in (margin, margin * 0.6, margin * 0.3, 0.0):
        p = np.stack([
            s * rng.uniform(0.1, 1.0, tries) * a.cav_ax,
            a.cav_cy + rng.uniform(-1, 1, tries) * a.cav_ay,
            rng.uniform(a.dome_l - 60, a.apex, tries),
        ], axis=1)
        ok = a.in_lung(p, m) & (a.lobe_code(p[:, 0], p[:, 1], p[:, 2]) == LOBES[lobe])
        if ok.any():
            return p[np.argmax(ok)]
    raise ConfigError(f"no room for a finding of margin {margin} mm in the {lobe}")


# ---- devices and calcium -----------------------------------------------------------------
def _medical_material(a: Anatomy, rng, o):
    kind = o.get("kind") or ("port catheter" if rng.random() < 0.6 else "pacemaker")
    side = o.get("side") or ("right" if (kind == "port catheter" and rng.random() < 0.7) else "left")
    s = -1 if side == "right" else 1
    x = s * rng.uniform(0.35, 0.5) * a.body_ax
    y_skin = -a.body_ay * np.sqrt(1 - (x / a.body_ax) ** 2)
    z = a.carina + rng.uniform(15, 35)
    svc_pts, _ = a.svc
    entry = np.array([s * 38.0, a.cav_cy - 0.35 * a.cav_ay, a.apex - 5])
    svc_top = svc_pts[0] + np.array([0, 0, -(svc_pts[0][2] - a.apex) - 10])
    svc_low = svc_pts[1]
    metal = rng.uniform(2500, 3000)
    layers = []
    if kind == "port catheter":
        c = np.array([x, y_skin + max(a.fat_mm * 0.55, 7.0), z])
        radii = np.array([12.0, 6.0, 12.0])
        layers.append(Layer(Ellipsoid(c, radii), metal, Tissue.METAL, 70))
        path = [c, entry, svc_top, svc_low]
        hu_line, r_line = rng.uniform(1800, 2400), 1.5
    else:
        c = np.array([x, y_skin + max(a.fat_mm * 0.55, 7.0), z])
        radii = np.array([22.0, 5.0, 18.0])
        layers.append(Layer(Ellipsoid(c, radii), metal, Tissue.METAL, 70))
        hc = a.heart_center
        tip = hc + np.array([-0.3 * a.heart_half_width(), -0.3 * a.heart_half_depth(), -0.4 * a.heart_r[2]])
        path = [c, entry, svc_top, svc_low, tip]
        hu_line, r_line = metal, 1.2
    for cap in tube(path, r_line):
        layers.append(Layer(cap, hu_line, Tissue.METAL, 70.1))
    truth = {"kind": kind, "side": side, "location": f"{side} anterior chest wall",
             "center_mm": _pt(c), "size_mm": _r(2 * radii.max()), "tip_mm": _pt(path[-1])}
    return layers, truth


def _aortic_calcification(a: Anatomy, rng, o):
    pts, radii = a.aorta
    n = int(o.get("count") or rng.integers(6, 16))
    seglen = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0], np.cumsum(seglen)])
    layers, parts = [], []
    allowed = frozenset({int(Tissue.AORTA), int(Tissue.MEDIASTINUM), int(Tissue.VESSEL)}) | LUNG
    for _ in range(n):
        t = rng.uniform(0.25, 0.85) * cum[-1]
        i = min(int(np.searchsorted(cum, t)) - 1, len(seglen) - 1)
        i = max(i, 0)
        f = (t - cum[i]) / max(seglen[i], 1e-6)
        centre_line = pts[i] + f * (pts[i + 1] - pts[i])
        r = radii[i] + f * (radii[i + 1] - radii[i])
        tangent = _unit(pts[i + 1] - pts[i])
        v = rng.normal(size=3)
        radial = _unit(v - (v @ tangent) * tangent)
        c = centre_line + radial * (r - 0.5)
        size = np.array([rng.uniform(2.0, 3.0), rng.uniform(3.0, 6.0), rng.uniform(3.0, 6.0)])
        axes = np.stack([radial, tangent, _unit(np.cross(radial, tangent))], axis=1)
        layers.append(Layer(Ellipsoid(c, size, axes), rng.uniform(700, 1200), Tissue.CALCIUM, 60, allowed))
        parts.append({"center_mm": _pt(c), "size_mm": _r(2 * size.max())})
    mean = np.mean([p["center_mm"] for p in parts], axis=0)
    return layers, {"location": "thoracic aorta", "count": n, "center_mm": _pt(mean), "parts": parts}


def _coronary_calcification(a: Anatomy, rng, o):
    axes = a.heart_axes()
    e1, e2, e3 = axes[:, 0], axes[:, 1], axes[:, 2]  # long axis (left-anterior), left-posterior, up
    arteries = {
        "left anterior descending": lambda t: _unit((-0.2 + 1.0 * t) * e1 - 0.9 * e2 + (0.45 - 0.6 * t) * e3),
        "circumflex": lambda t: _unit(np.cos(0.3 + 1.2 * t) * e1 + np.sin(0.3 + 1.2 * t) * e2 + 0.45 * e3),
        "right coronary": lambda t: _unit(-np.cos(1.2 * t) * e1 - np.sin(0.6 + 0.8 * t) * e2 + 0.35 * e3),
    }
    names = list(arteries)
    k = int(o.get("arteries") or rng.integers(1, 4))
    chosen = [names[i] for i in sorted(rng.choice(3, size=k, replace=False))]
    allowed = frozenset({int(Tissue.MEDIASTINUM), int(Tissue.HEART), int(Tissue.PERICARDIAL_FLUID)}) | LUNG
    layers, parts = [], []
    for art in chosen:
        for t in rng.uniform(0.0, 0.7, rng.integers(2, 5)):
            d_world = arteries[art](t)
            local = axes.T @ d_world
            surf_local = local / np.sqrt(((local / a.heart_r) ** 2).sum())
            p = a.heart_center + axes @ surf_local
            normal = _unit(axes @ (surf_local / a.heart_r ** 2))
            c = p + normal * 1.0
            r = rng.uniform(2.0, 3.2)
            layers.append(Layer(sphere(c, r), rng.uniform(600, 1100), Tissue.CALCIUM, 60, allowed))
            parts.append({"artery": art, "center_mm": _pt(c), "size_mm": _r(2 * r)})
    mean = np.mean([p["center_mm"] for p in parts], axis=0)
    return layers, {"location": ", ".join(chosen), "arteries": chosen, "count": len(parts),
                    "center_mm": _pt(mean), "parts": parts}


# ---- heart and mediastinum -----------------------------------------------------------------
def _cardiomegaly_adjust(a: Anatomy, rng, o):
    ratio = float(o.get("ratio") or rng.uniform(0.56, 0.66))
    a.set_heart_ratio(ratio)
    return {"ratio": ratio}


def _cardiomegaly(a: Anatomy, rng, p):
    return [], {"location": "heart", "ratio": round(p["ratio"], 3), "center_mm": _pt(a.heart_center),
                "size_mm": _r(2 * a.heart_half_width())}


def _pericardial_adjust(a: Anatomy, rng, o):
    t = float(o.get("thickness_mm") or rng.uniform(8, 20))
    a.pericardial_fluid_mm = t
    return {"thickness_mm": t}


def _pericardial(a: Anatomy, rng, p):
    return [], {"location": "pericardium", "thickness_mm": _r(p["thickness_mm"]),
                "center_mm": _pt(a.heart_center), "size_mm": _r(p["thickness_mm"])}


def _hiatal_hernia(a: Anatomy, rng, o):
    ex, ey = a.eso_xy
    radii = np.array([rng.uniform(20, 30), rng.uniform(16, 22), rng.uniform(20, 30)]) * float(o.get("size_scale", 1.0))
    c = np.array([ex + rng.uniform(4, 12), ey - rng.uniform(2, 8), a.dome_l + radii[2] * rng.uniform(0.5, 0.8)])
    allowed = frozenset({int(t) for t in (Tissue.MEDIASTINUM, Tissue.ESOPHAGUS, Tissue.HEART,
                                          Tissue.PERICARDIAL_FLUID, Tissue.ABDOMEN, Tissue.STOMACH,
                                          Tissue.LIVER)}) | LUNG
    air_level = c[2] + radii[2] * rng.uniform(-0.1, 0.3)
    layers = [
        Layer(Ellipsoid(c, radii + 3.0), a.hu["muscle"], Tissue.STOMACH, 50.5, allowed),
        Layer(Ellipsoid(c, radii), rng.uniform(5, 25), Tissue.STOMACH, 50.6, allowed | {int(Tissue.STOMACH)}),
        Layer(Intersection((Ellipsoid(c, radii), HalfSpace(np.array([0, 0, -1.0]), -air_level))),
              -1000.0, Tissue.STOMACH, 50.7, allowed | {int(Tissue.STOMACH)}),
    ]
    return layers, {"location": "oesophageal hiatus", "center_mm": _pt(c), "size_mm": _r(2 * radii.max()),
                    "radii_mm": [_r(r) for r in radii], "air_level_mm": round(float(air_level - c[2]), 1)}


def _lymphadenopathy(a: Anatomy, rng, o):
    tx, ty = a.trachea_xy
    stations = {
        "right paratracheal": np.array([tx - a.trachea_r - 12, ty - 4, a.carina + 22]),
        "subcarinal": np.array([tx + 3, ty + 6, a.carina - 30]),
        "prevascular": np.array([-2.0, a.cav_cy - 0.62 * a.cav_ay, a.carina + 12]),
        "right hilar": a.hila["right"] + np.array([-10.0, 20.0, -22.0]),
        "left hilar": a.hila["left"] + np.array([10.0, 20.0, -16.0]),
    }
    names = list(stations)
    k = int(o.get("count") or rng.integers(1, 4))
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=k, replace=False))]
    allowed = frozenset({int(Tissue.MEDIASTINUM), int(Tissue.VESSEL), int(Tissue.AIRWAY_WALL)}) | LUNG
    layers, parts = [], []
    for st in chosen:
        short = float(o.get("short_axis_mm") or rng.uniform(13, 24))
        radii = np.array([short / 2, short / 2, short / 2 * rng.uniform(1.2, 1.5)])
        c = stations[st]
        layers.append(Layer(Ellipsoid(c, radii), rng.uniform(35, 50), Tissue.LESION, 50, allowed))
        parts.append({"station": st, "center_mm": _pt(c), "size_mm": _r(short)})
    big = max(parts, key=lambda p: p["size_mm"])
    return layers, {"location": ", ".join(chosen), "stations": chosen, "center_mm": big["center_mm"],
                    "size_mm": big["size_mm"], "parts": parts}


# ---- airways ---------------------------------------------------------------------------------
def _peribronchial_adjust(a: Anatomy, rng, o):
    w = float(o.get("wall_mm") or rng.uniform(2.8, 4.0))
    a.airway_wall_mm = w
    return {"wall_mm": w}


def _peribronchial(a: Anatomy, rng, p):
    segs = [s for s in a.airways if s.generation >= 1 and s.side != "central"]
    c = np.mean([(s.a + s.b) / 2 for s in segs], axis=0)
    return [], {"location": "both lungs", "side": "bilateral", "wall_mm": _r(p["wall_mm"]),
                "center_mm": _pt(c), "size_mm": _r(p["wall_mm"])}


def _bronchiectasis_adjust(a: Anatomy, rng, o):
    lobes = o.get("lobes") or ([_pick_lobe(rng, o, ("RLL", "LLL", "RML", "LUL"))] if "lobe" in o or rng.random() < 0.6
                               else ["RLL", "LLL"])
    lobes = [str(x).upper() for x in lobes]
    factor = float(o.get("factor") or rng.uniform(2.0, 2.6))
    extra: list[Segment] = []
    max_d, art_d = 0.0, 0.0
    for seg in list(a.airways):
        if seg.generation < 1 or seg.side == "central" or a.lobe_of((seg.a + seg.b) / 2) not in lobes:
            continue
        ra, rb = max(seg.ra * factor, 3.0), max(seg.rb * factor, 3.0)
        if seg.pair is not None:  # keep the companion artery beside the wider bronchus
            v = a.vessels[seg.pair]
            off = _unit(v.a - seg.a) * (ra + a.wall_thickness(ra) + v.ra + 1.0)
            a.vessels[seg.pair] = Segment(seg.a + off, seg.b + off, v.ra, v.rb, v.side, v.generation)
            art_d = max(art_d, 2 * v.ra)
        seg.ra, seg.rb = ra, rb
        max_d = max(max_d, 2 * ra)
        # Dilated bronchi reach further out than normal ones.
        d = _unit(seg.b - seg.a)
        end = seg.b + d * rng.uniform(15, 25)
        if a.in_lung(end[None], rb + 2)[0]:
            extra.append(Segment(seg.b, end, rb, rb, seg.side, seg.generation + 1))
    a.airways.extend(extra)
    return {"lobes": lobes, "diameter_mm": max_d, "artery_mm": art_d}


def _bronchiectasis(a: Anatomy, rng, p):
    segs = [s for s in a.airways if s.generation >= 1 and s.side != "central"
            and a.lobe_of((s.a + s.b) / 2) in p["lobes"]]
    c = np.mean([(s.a + s.b) / 2 for s in segs], axis=0) if segs else a.lobar_roots[p["lobes"][0]][0]
    return [], {"location": " and ".join(LOBE_NAMES[x] for x in p["lobes"]), "lobes": p["lobes"],
                "center_mm": _pt(c), "size_mm": _r(p["diameter_mm"]), "artery_mm": _r(p["artery_mm"])}


# ---- lung parenchyma ---------------------------------------------------------------------------
class _Field:
    """A smooth random field in mm: Gaussian values on a `cell` mm lattice, interpolated."""

    def __init__(self, a: Anatomy, rng, cell: float, smooth: float = 1.0):
        self.lo = np.array([-a.cav_ax - 20, a.cav_cy - a.cav_ay - 20, a.z_bottom - 40])
        hi = np.array([a.cav_ax + 20, a.cav_cy + a.cav_ay + 20, a.z_top + 40])
        self.cell = cell
        n = np.ceil((hi - self.lo) / cell).astype(int) + 2
        v = ndimage.gaussian_filter(rng.normal(size=tuple(n)), smooth)
        self.values = (v / (v.std() + 1e-9)).astype(np.float32)

    def __call__(self, x, y, z):
        x, y, z = np.broadcast_arrays(x, y, z)
        coords = [(c - lo) / self.cell for c, lo in zip((x, y, z), self.lo)]
        return ndimage.map_coordinates(self.values, coords, order=1, mode="nearest").astype(np.float32)


def _region(a: Anatomy, where: str) -> Shape:
    cav = a.cavity()
    if where == "upper":
        return Intersection((cav, HalfSpace(np.array([0, 0, -1.0]), -(a.carina - 30))))
    if where == "lower":
        return Intersection((cav, HalfSpace(np.array([0, 0, 1.0]), a.carina - 30)))
    return cav


def _emphysema(a: Anatomy, rng, o):
    where = o.get("distribution") or ("upper" if rng.random() < 0.65 else "diffuse")
    drop = float(o.get("drop_hu") or rng.uniform(80, 110))
    region = _region(a, "upper" if where == "upper" else "all")
    layers = [Layer(region, -drop, None, 20.0, LUNG, add=True)]
    z_lo = a.carina - 30 if where == "upper" else a.dome_l - 60
    n_holes = int(rng.integers(40, 90))
    holes = []
    for _ in range(n_holes):
        s = 1 if rng.random() < 0.5 else -1
        p = np.array([s * rng.uniform(0.15, 0.95) * a.cav_ax, a.cav_cy + rng.uniform(-0.9, 0.9) * a.cav_ay,
                      rng.uniform(z_lo, a.apex - 10)])
        r = rng.uniform(4, 11)
        if a.in_lung(p[None], r)[0]:
            layers.append(Layer(sphere(p, r), rng.uniform(-1000, -985), None, 20.05, LUNG))
            holes.append(p)
    c = np.mean(holes, axis=0) if holes else np.array([0, a.cav_cy, (z_lo + a.apex) / 2])
    loc = "both upper lobes" if where == "upper" else "both lungs"
    return layers, {"location": loc, "side": "bilateral", "distribution": where, "drop_hu": _r(drop),
                    "holes": len(holes), "z_range_mm": [_r(z_lo), _r(a.apex)], "center_mm": _pt(c),
                    "size_mm": _r(a.apex - z_lo)}


def _mosaic(a: Anatomy, rng, o):
    where = o.get("distribution") or ("diffuse" if rng.random() < 0.6 else "lower")
    amp = float(o.get("amplitude_hu") or rng.uniform(80, 120))
    field = _Field(a, rng, cell=float(rng.uniform(14, 20)), smooth=0.8)

    def value(x, y, z):
        return amp * np.tanh(2.5 * field(x, y, z))

    region = _region(a, "lower" if where == "lower" else "all")
    c = np.array([0.0, a.cav_cy, (a.carina - 30 + a.dome_r) / 2 if where == "lower" else a.carina - 40])
    loc = "both lower zones" if where == "lower" else "both lungs"
    return [Layer(region, value, None, 20.1, LUNG, add=True)], {
        "location": loc, "side": "bilateral", "distribution": where, "amplitude_hu": _r(amp),
        "center_mm": _pt(c), "size_mm": _r(field.cell)}


class _SeptalLattice(Shape):
    """Thin planes every `cell` mm along three rotated directions, gently warped: in any slice
    a polygonal network of lines, like thickened interlobular septa."""

    def __init__(self, rng, cell: float, half: float, warp: _Field, warp_mm: float):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        self.normals = q.T
        self.offsets = rng.uniform(0, cell, 3)
        self.cell, self.half, self.warp, self.warp_mm = cell, half, warp, warp_mm

    def occupancy(self, x, y, z, spacing):
        w = self.warp(x, y, z) * self.warp_mm
        occ = None
        for n, off in zip(self.normals, self.offsets):
            u = x * n[0] + y * n[1] + z * n[2] + off + w
            d = self.cell * np.abs(np.mod(u / self.cell + 0.5, 1.0) - 0.5)
            width = abs(n[0]) * spacing[0] + abs(n[1]) * spacing[1] + abs(n[2]) * spacing[2]
            o = np.clip(np.minimum(0.5 - (d - self.half) / width, 2 * self.half / width), 0, 1)
            occ = o if occ is None else np.maximum(occ, o)
        return occ.astype(np.float32)


def _septal(a: Anatomy, rng, o):
    where = o.get("distribution") or ("lower" if rng.random() < 0.5 else "diffuse")
    depth = float(rng.uniform(22, 35))
    cell = float(rng.uniform(11, 16))
    half = float(rng.uniform(1.0, 1.6))
    lattice = _SeptalLattice(rng, cell, half, _Field(a, rng, cell=25.0), 3.0)
    cav = a.cavity()
    inner = EllipticCylinder(0.0, a.cav_cy, a.cav_ax - depth, a.cav_ay - depth, cav.z0, cav.z1, a.profile)
    shell = Difference(_region(a, "lower" if where == "lower" else "all"), inner)
    hu = rng.uniform(-150, 0)
    layer = Layer(Intersection((shell, lattice)), hu, None, 20.2, LUNG)
    c = np.array([0.0, a.cav_cy, a.carina - 60 if where == "lower" else a.carina - 40])
    loc = "peripheral lower zones of both lungs" if where == "lower" else "periphery of both lungs"
    return [layer], {"location": loc, "side": "bilateral", "distribution": where, "depth_mm": _r(depth),
                     "cell_mm": _r(cell), "line_mm": _r(2 * half), "center_mm": _pt(c), "size_mm": _r(cell)}


def _ground_glass(a: Anatomy, rng, o):
    k = int(o.get("count") or rng.integers(1, 3))
    lobes = [_pick_lobe(rng, o) for _ in range(k)]
    layers, parts = [], []
    for lobe in lobes:
        radii = rng.uniform(16, 32, 3) * float(o.get("size_scale", 1.0))
        c = _point_in_lobe(a, rng, lobe, float(radii.min()) * 0.6)
        hu = float(o.get("hu") or rng.uniform(-620, -480))
        layers.append(Layer(Ellipsoid(c, radii), hu, None, 20.3, LUNG))
        parts.append({"lobe": lobe, "center_mm": _pt(c), "size_mm": _r(2 * radii.mean()), "hu": _r(hu)})
    return layers, _summary(parts)


def _consolidation(a: Anatomy, rng, o):
    lobe = _pick_lobe(rng, o, ("RLL", "LLL", "RML", "RUL", "LUL"))
    radii = rng.uniform(30, 50, 3)
    c = _point_in_lobe(a, rng, lobe, 15.0)
    hu = rng.uniform(20, 45)
    code = int(LOBES[lobe])
    layers = [Layer(Ellipsoid(c, radii), hu, None, 20.4, frozenset({code}))]
    # Air bronchograms: air-filled branches inside the dense region.
    for _ in range(int(rng.integers(3, 7))):
        d = _unit(rng.normal(size=3))
        start = c - d * radii.min() * 0.3
        end = c + d * radii.min() * rng.uniform(0.5, 0.8)
        layers.append(Layer(Capsule(start, end, rng.uniform(1.8, 2.6), 1.3), -950.0, None,
                            ORDER_LUNG_AIRWAYS + 0.2, frozenset({code})))
    return layers, {"location": LOBE_NAMES[lobe], "lobe": lobe, "side": LOBE_SIDE[lobe], "center_mm": _pt(c),
                    "size_mm": _r(2 * radii.mean()), "radii_mm": [_r(r) for r in radii], "hu": _r(hu)}


def _atelectasis(a: Anatomy, rng, o):
    side = _pick_side(rng, o)
    layers, parts = [], []
    for sd in _sides(side):
        s = -1 if sd == "right" else 1
        rx, ry, rz = rng.uniform(22, 35), rng.uniform(6, 10), rng.uniform(16, 24)
        x = s * rng.uniform(0.35, 0.6) * a.cav_ax
        y_wall = a.cav_cy + a.cav_ay * np.sqrt(1 - (x / a.cav_ax) ** 2)
        y = y_wall - ry - 2.0
        z = float(a.diaphragm(np.float64(x), np.float64(y))) + rz + rng.uniform(8, 16)
        c = np.array([x, y, z])
        hu = rng.uniform(15, 45)
        layers.append(Layer(Ellipsoid(c, [rx, ry, rz]), hu, Tissue.LESION, 40.0, _LUNGISH))
        lobe = "RLL" if sd == "right" else "LLL"
        parts.append({"lobe": lobe, "side": sd, "center_mm": _pt(c), "size_mm": _r(2 * rx),
                      "radii_mm": [_r(rx), _r(ry), _r(rz)], "hu": _r(hu)})
    out = _summary(parts)
    out["side"] = side
    return layers, out


def _nodule(a: Anatomy, rng, o):
    lobe = _pick_lobe(rng, o)
    d = float(o.get("diameter_mm") or rng.uniform(8, 25))
    c = o.get("center_mm_patient")
    c = np.asarray(c, float) if c is not None else _point_in_lobe(a, rng, lobe, d / 2 + 4)
    hu = float(o.get("hu") or rng.uniform(20, 60))
    layer = Layer(sphere(c, d / 2), hu, Tissue.LESION, 40.1, _LUNGISH)
    return [layer], {"location": LOBE_NAMES[lobe], "lobe": lobe, "side": LOBE_SIDE[lobe], "center_mm": _pt(c),
                     "size_mm": _r(d), "hu": _r(hu)}


def _fibrotic(a: Anatomy, rng, o):
    lobes = [_pick_lobe(rng, o, ("RUL", "LUL", "RLL", "LLL", "RML"))]
    if "lobe" not in o and rng.random() < 0.4:
        lobes.append(_pick_lobe(rng, {}, tuple(x for x in LOBES if x != lobes[0])))
    layers, parts = [], []
    for lobe in lobes:
        for _ in range(int(rng.integers(3, 6))):
            # Start just inside the chest wall, run inwards.
            for _try in range(200):
                p = _point_in_lobe(a, rng, lobe, 3.0)
                f = max(float(a.profile(np.float64(p[2]))), 1e-3)
                q = np.hypot(p[0] / (a.cav_ax * f), (p[1] - a.cav_cy) / (a.cav_ay * f))
                if q > 1 - 14.0 / (a.cav_ay * f):
                    break
            inward = _unit(np.array([-p[0], a.cav_cy - p[1], 0.0]) + rng.normal(scale=0.4, size=3))
            length = rng.uniform(22, 45)
            end = p + inward * length
            r = rng.uniform(1.6, 2.4)
            layers.append(Layer(Capsule(p, end, r, r * 0.8), rng.uniform(-60, 30), Tissue.LESION, 40.2,
                                LUNG | {int(Tissue.VESSEL)}))
            parts.append({"lobe": lobe, "center_mm": _pt((p + end) / 2), "size_mm": _r(length),
                          "start_mm": _pt(p), "end_mm": _pt(end), "width_mm": _r(2 * r)})
    return layers, _summary(parts)


def _pleural_effusion(a: Anatomy, rng, o):
    side = _pick_side(rng, o, 0.35)
    layers, parts = [], []
    for sd in _sides(side):
        t = float(o.get("thickness_mm") or rng.uniform(15, 45))
        top = a.dome_r + float(o.get("height_mm") or rng.uniform(50, 120))
        cav = a.cavity()
        crescent = Difference(cav, Shifted(cav, np.array([0.0, -t, 0.0])))
        s = -1.0 if sd == "right" else 1.0
        shape = Intersection((crescent, HalfSpace(np.array([-s, 0, 0]), 0.0),
                              HalfSpace(np.array([0, 0, 1.0]), top)))
        lung = RIGHT_LUNG if sd == "right" else LEFT_LUNG
        allowed = lung | {int(Tissue.VESSEL), int(Tissue.AIRWAY), int(Tissue.AIRWAY_WALL), int(Tissue.LESION)}
        layers.append(Layer(shape, rng.uniform(5, 20), Tissue.PLEURAL_FLUID, 45, allowed))
        x = s * 0.5 * a.cav_ax
        y = a.cav_cy + a.cav_ay * np.sqrt(1 - 0.25) - t / 2
        c = np.array([x, y, float(a.diaphragm(np.float64(x), np.float64(y))) + 15])
        parts.append({"side": sd, "center_mm": _pt(c), "size_mm": _r(t), "top_mm": _r(top)})
    out = _summary(parts)
    out["side"] = side
    out["location"] = side
    return layers, out


def _summary(parts: list[dict]) -> dict:
    big = max(parts, key=lambda p: p["size_mm"])
    lobes = list(dict.fromkeys(p["lobe"] for p in parts if "lobe" in p))
    sides = sorted({p.get("side") or LOBE_SIDE[p["lobe"]] for p in parts})
    out = {"center_mm": big["center_mm"], "size_mm": big["size_mm"], "parts": parts,
           "side": "bilateral" if len(sides) == 2 else sides[0]}
    if lobes:
        out["lobes"] = lobes
        out["location"] = " and ".join(LOBE_NAMES[x] for x in lobes)
    return out


def _no_adjust(fn):
    return Planter(_keep, fn)


PLANTERS: dict[str, Planter] = {
    "Medical material": _no_adjust(_medical_material),
    "Arterial wall calcification": _no_adjust(_aortic_calcification),
    "Cardiomegaly": Planter(_cardiomegaly_adjust, _cardiomegaly),
    "Pericardial effusion": Planter(_pericardial_adjust, _pericardial),
    "Coronary artery wall calcification": _no_adjust(_coronary_calcification),
    "Hiatal hernia": _no_adjust(_hiatal_hernia),
    "Lymphadenopathy": _no_adjust(_lymphadenopathy),
    "Emphysema": _no_adjust(_emphysema),
    "Atelectasis": _no_adjust(_atelectasis),
    "Lung nodule": _no_adjust(_nodule),
    "Lung opacity": _no_adjust(_ground_glass),
    "Pulmonary fibrotic sequela": _no_adjust(_fibrotic),
    "Pleural effusion": _no_adjust(_pleural_effusion),
    "Mosaic attenuation pattern": _no_adjust(_mosaic),
    "Peribronchial thickening": Planter(_peribronchial_adjust, _peribronchial),
    "Consolidation": _no_adjust(_consolidation),
    "Bronchiectasis": Planter(_bronchiectasis_adjust, _bronchiectasis),
    "Interlobular septal thickening": _no_adjust(_septal),
}
assert list(PLANTERS) == list(ct_rate().names), "planters must follow the label set's order"
