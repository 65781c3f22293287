"""A normal chest, drawn from a patient's random numbers, as painter's layers in millimetres.

Patient frame: x → patient Left, y → Posterior, z → Superior; x = 0 is the midline, y = 0 the
centre of the body outline, z = 0 the top of the right diaphragmatic dome. Findings change the
fields of `Anatomy` (heart size, airway walls, ...) before `layers()` is called, or add layers
of their own; the vessel and airway trees are grown once from the normal anatomy, so a case with
and without a finding differs only where the finding is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.synth.canvas import LUNG, Layer, Tissue
from engine.synth.shapes import (
    BelowSurface,
    Box,
    Capsule,
    Ellipsoid,
    EllipticCylinder,
    HalfSpace,
    Intersection,
    Shape,
    tube,
)

# Painting order of the anatomy; findings slot in between (see findings.py).
ORDER_BODY, ORDER_LUNG, ORDER_MEDIASTINUM, ORDER_HEART, ORDER_VESSELS = 1, 3, 5, 8, 9
ORDER_AIRWAYS_CENTRAL, ORDER_ABDOMEN, ORDER_BONE = 11, 12, 13
ORDER_PARENCHYMA, ORDER_LUNG_VESSELS, ORDER_LUNG_AIRWAYS = 20, 30, 31


@dataclass
class Segment:
    """One branch of a tree: a tube from a to b with radius ra → rb, in the lung on `side`."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float
    side: str  # "right" | "left"
    generation: int = 0
    pair: int | None = None  # index of an airway's companion artery in Anatomy.vessels


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / (np.linalg.norm(v) + 1e-9)


@dataclass
class Anatomy:
    # Body outline and walls (half-width ax, half-depth ay).
    body_ax: float
    body_ay: float
    fat_mm: float
    muscle_mm: float
    cav_ax: float
    cav_ay: float
    cav_cy: float
    # Heights.
    dome_r: float
    dome_l: float
    apex: float
    z_round: float
    carina: float
    z_bottom: float
    z_top: float
    # Heart: centre, in-plane long/short radii, height radius, rotation about z (deg).
    heart_center: np.ndarray
    heart_r: np.ndarray
    heart_theta: float
    # Spine.
    vb_r: float
    vb_y: float
    # Mediastinum half-width low and high.
    med_w_low: float
    med_w_high: float
    # Tissue values (HU).
    hu: dict[str, float]
    # Fissures: oblique (posterior z, anterior z) per side, horizontal z (right).
    oblique: dict[str, tuple[float, float]]
    z_horizontal: float
    # Ribs.
    rib_gap: float
    rib_drop: float
    rib_r: float
    trachea_r: float
    # Finding-controlled state.
    pericardial_fluid_mm: float = 0.0
    airway_wall_mm: float | None = None  # None: normal walls (~15% of the lumen radius)
    airways: list[Segment] = field(default_factory=list)
    vessels: list[Segment] = field(default_factory=list)
    hila: dict[str, np.ndarray] = field(default_factory=dict)
    lobar_roots: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)
    aorta: tuple[np.ndarray, np.ndarray] | None = None  # centreline points, radii
    svc: tuple[np.ndarray, np.ndarray] | None = None
    heart_ratio: float = 0.0  # heart width / thoracic width at the heart's level
    pa_scale: float = 1.0  # calibre of the central pulmonary arteries (> 1: pulmonary hypertension)

    # ---- derived geometry -------------------------------------------------------------
    @property
    def eso_xy(self) -> tuple[float, float]:
        return 2.0, self.vb_y - self.vb_r - 9.0

    @property
    def trachea_xy(self) -> tuple[float, float]:
        ex, ey = self.eso_xy
        return 0.0, ey - 7.0 - self.trachea_r - 3.0

    def heart_axes(self) -> np.ndarray:
        t = np.deg2rad(self.heart_theta)
        return np.array([[np.cos(t), np.sin(t), 0.0], [-np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])

    def heart_half_width(self) -> float:
        """x half-extent of the heart's central axial section."""
        t = np.deg2rad(self.heart_theta)
        return float(np.hypot(self.heart_r[0] * np.cos(t), self.heart_r[1] * np.sin(t)))

    def heart_half_depth(self) -> float:
        t = np.deg2rad(self.heart_theta)
        return float(np.hypot(self.heart_r[0] * np.sin(t), self.heart_r[1] * np.cos(t)))

    def set_heart_ratio(self, ratio: float) -> None:
        """Scale the heart in-plane so that its width is `ratio` of the thoracic width; keep
        its front behind the anterior chest wall."""
        k = ratio * self.cav_ax / self.heart_half_width()
        self.heart_r = self.heart_r * np.array([k, k, 1.0 + 0.5 * (k - 1.0)])
        self.heart_ratio = float(ratio)
        self.fit_heart()

    def fit_heart(self) -> None:
        """Rest the heart (with its pericardial sac) behind the anterior chest wall."""
        front = self.cav_cy - self.cav_ay + 6.0 + self.pericardial_fluid_mm
        c = self.heart_center.copy()
        c[1] = front + self.heart_half_depth()
        self.heart_center = c

    def heart_shape(self, grow: float = 0.0) -> Ellipsoid:
        return Ellipsoid(self.heart_center, self.heart_r + grow, self.heart_axes())

    def profile(self, z):
        """Scale of the thoracic cavity with height: 1 below z_round, closing at the apex."""
        u = np.clip((z - self.z_round) / (self.apex - self.z_round), 0.0, 1.0)
        return np.sqrt(1.0 - u * u)

    def diaphragm(self, x, y):
        def dome(top, xs):
            dx = (x - xs) / (0.6 * self.cav_ax)
            dy = (y - (self.cav_cy - 0.1 * self.cav_ay)) / self.cav_ay
            k = np.where(dy > 0, 75.0, 35.0)
            return top - 55.0 * dx * dx - k * dy * dy

        xs = 0.45 * self.cav_ax
        return np.maximum(np.maximum(dome(self.dome_r, -xs), dome(self.dome_l, xs)), self.dome_l - 95.0)

    def med_halfwidth(self, y, z):
        u = np.clip((z - self.heart_center[2]) / (self.carina - self.heart_center[2]), 0.0, 1.0)
        w = self.med_w_low + (self.med_w_high - self.med_w_low) * u
        v = np.clip((y - (self.cav_cy + 30.0)) / (self.cav_ay + 25.0), -1.0, 1.0)
        return w * np.sqrt(1.0 - v * v) * (0.55 + 0.45 * self.profile(z))

    def oblique_z(self, side: str, y):
        z_post, z_ant = self.oblique[side]
        t = (y - (self.cav_cy - self.cav_ay)) / (2.0 * self.cav_ay)
        return z_ant + (z_post - z_ant) * t

    def lobe_code(self, x, y, z):
        x, y, z = np.broadcast_arrays(x, y, z)
        right = x < 0
        lower = np.where(right, z < self.oblique_z("right", y), z < self.oblique_z("left", y))
        code = np.where(right, np.where(z < self.z_horizontal, Tissue.RML, Tissue.RUL), Tissue.LUL)
        code = np.where(lower, np.where(right, Tissue.RLL, Tissue.LLL), code)
        return code.astype(np.uint8)

    def lobe_of(self, p) -> str:
        code = int(self.lobe_code(np.float64(p[0]), np.float64(p[1]), np.float64(p[2])))
        return Tissue(code).name

    def in_lung(self, p: np.ndarray, margin) -> np.ndarray:
        """Whether points (N, 3) lie in lung parenchyma at least `margin` mm from its edges
        (approximately; analytic, so it does not depend on the voxel grid)."""
        p = np.atleast_2d(p)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        margin = np.broadcast_to(np.asarray(margin, float), x.shape)
        f = np.maximum(self.profile(z), 1e-3)
        ax, ay = self.cav_ax * f, self.cav_ay * f
        q = np.hypot(x / ax, (y - self.cav_cy) / ay)
        ok = q < 1.0 - margin / ay
        ok &= z > self.diaphragm(x, y) + margin
        ok &= np.abs(x) > self.med_halfwidth(y, z) + margin
        h = self.heart_axes()
        d = p - self.heart_center
        local = d @ h
        grow = 6.0 + self.pericardial_fluid_mm
        qh = np.sqrt(((local / (self.heart_r + grow + margin[:, None])) ** 2).sum(axis=1))
        ok &= qh > 1.0
        ok &= np.hypot(x, y - self.vb_y) > self.vb_r + 12.0 + margin
        return ok

    def lung_value(self, x, y, z):
        return self.hu["lung"] + self.hu["lung_gradient"] * (y - self.cav_cy) / self.cav_ay

    def cavity(self) -> EllipticCylinder:
        return EllipticCylinder(0.0, self.cav_cy, self.cav_ax, self.cav_ay, self.z_bottom - 20, self.apex + 2, self.profile)

    def wall_thickness(self, r: float) -> float:
        return self.airway_wall_mm if self.airway_wall_mm is not None else 0.6 + 0.15 * r

    # ---- layers -----------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        hu = self.hu
        L: list[Layer] = []

        def add(shape: Shape, value, tissue=None, order=0.0, only=None):
            L.append(Layer(shape, value, tissue, order, only))

        # Scanner table under the patient's back: two carbon plates around a foam core.
        top = self.body_ay + 1.0
        add(Box([-230, top, self.z_bottom - 20], [230, top + 40, self.z_top + 20]), -950.0, Tissue.TABLE, 0)
        for y0 in (top, top + 36):
            add(Box([-230, y0, self.z_bottom - 20], [230, y0 + 4, self.z_top + 20]), hu["table"], Tissue.TABLE, 0.1)
        # Body wall: subcutaneous fat, then muscle, then the thoracic cavity (lungs by lobe).
        z0, z1 = self.z_bottom - 20, self.z_top + 20
        add(EllipticCylinder(0, 0, self.body_ax, self.body_ay, z0, z1), hu["fat"], Tissue.FAT, ORDER_BODY)
        add(EllipticCylinder(0, 0, self.body_ax - self.fat_mm, self.body_ay - self.fat_mm, z0, z1),
            hu["muscle"], Tissue.MUSCLE, ORDER_BODY + 0.1)
        add(self.cavity(), self.lung_value, self.lobe_code, ORDER_LUNG)
        # Paraspinal muscles behind the posterior ribs.
        under_fat = EllipticCylinder(0, 0, self.body_ax - self.fat_mm, self.body_ay - self.fat_mm, z0, z1)
        for s in (-1, 1):
            para = EllipticCylinder(s * 40.0, self.cav_cy + self.cav_ay + 14.0, 30.0, 24.0, z0, z1)
            add(Intersection((para, under_fat)), hu["muscle"], Tissue.MUSCLE, ORDER_LUNG + 0.5)
        # Mediastinum: a fat-filled lens between the lungs.
        med = _Lens(self)
        add(med, hu["fat"], Tissue.MEDIASTINUM, ORDER_MEDIASTINUM, LUNG | {int(Tissue.MEDIASTINUM)})
        # Heart: pericardial fat, the pericardial space (fluid if an effusion is planted), heart.
        t = self.pericardial_fluid_mm
        add(self.heart_shape(t + 4.0), hu["fat"], Tissue.MEDIASTINUM, ORDER_HEART - 0.3)
        if t > 0:
            add(self.heart_shape(t), hu["pericardial_fluid"], Tissue.PERICARDIAL_FLUID, ORDER_HEART - 0.2)
        add(self.heart_shape(), hu["blood"], Tissue.HEART, ORDER_HEART)
        # Great vessels.
        # Blood is one value unenhanced; a contrast phase sets the aorta and pulmonary arteries apart.
        for cap in tube(*self.aorta):
            add(cap, hu.get("aorta_blood", hu["blood"]), Tissue.AORTA, ORDER_VESSELS)
        for cap in tube(*self.svc):
            add(cap, hu["blood"], Tissue.VESSEL, ORDER_VESSELS)
        for seg in self.pulmonary_arteries():
            add(seg, hu.get("pa_blood", hu["blood"]), Tissue.VESSEL, ORDER_VESSELS)
        # Oesophagus (collapsed), then the trachea and main bronchi (wall, lumen).
        ex, ey = self.eso_xy
        eso = [(ex, ey, self.z_top + 20), (ex, ey, self.dome_l + 5), (ex + 25, ey - 20, self.dome_l - 30)]
        for cap in tube(eso, 7.0):
            add(cap, hu["muscle"], Tissue.ESOPHAGUS, ORDER_VESSELS + 0.5)
        central = LUNG | {int(Tissue.MEDIASTINUM), int(Tissue.ESOPHAGUS), int(Tissue.VESSEL)}
        for seg in self._central_airways():
            wall = self.wall_thickness(seg.ra) if seg.generation > 0 else 2.0
            add(Capsule(seg.a, seg.b, seg.ra + wall, seg.rb + wall), hu["airway_wall"], Tissue.AIRWAY_WALL,
                ORDER_AIRWAYS_CENTRAL, central)
        for seg in self._central_airways():
            add(Capsule(seg.a, seg.b, seg.ra, seg.rb), -1000.0, Tissue.AIRWAY, ORDER_AIRWAYS_CENTRAL + 0.1,
                central | {int(Tissue.AIRWAY_WALL)})
        self._add_upper_abdomen(add, z0, z1)
        self._add_bones(add, z0, z1)
        self._add_lung_trees(add)
        return L

    def _add_upper_abdomen(self, add, z0: float, z1: float) -> None:
        """Below the diaphragm: soft tissue, liver (right), stomach (left), spleen."""
        hu = self.hu
        inner = EllipticCylinder(0, 0, self.body_ax - self.fat_mm - self.muscle_mm,
                                 self.body_ay - self.fat_mm - self.muscle_mm, z0, z1)
        below = BelowSurface(self.diaphragm)
        add(Intersection((inner, below)), hu["soft"], Tissue.ABDOMEN, ORDER_ABDOMEN)
        liver = Ellipsoid([-0.35 * self.cav_ax, self.cav_cy - 5, self.dome_r - 60],
                          [0.75 * self.cav_ax, 0.95 * self.cav_ay, 85])
        add(Intersection((liver, below, inner)), hu["liver"], Tissue.LIVER, ORDER_ABDOMEN + 0.1)
        spleen = Ellipsoid([0.7 * self.cav_ax, self.cav_cy + 0.5 * self.cav_ay, self.dome_l - 45], [30, 45, 50])
        add(Intersection((spleen, below, inner)), hu["soft"] + 5, Tissue.ABDOMEN, ORDER_ABDOMEN + 0.1)
        stomach = Ellipsoid([0.4 * self.cav_ax, self.cav_cy - 0.3 * self.cav_ay, self.dome_l - 40], [45, 40, 35])
        add(Intersection((stomach, below)), hu["fluid"], Tissue.STOMACH, ORDER_ABDOMEN + 0.2)
        add(Intersection((stomach, below, HalfSpace(np.array([0, 0, -1.0]), -(self.dome_l - 25)))),
            -1000.0, Tissue.STOMACH, ORDER_ABDOMEN + 0.3)

    def _add_bones(self, add, z0: float, z1: float) -> None:
        """Spine, ribs and sternum: last among normal anatomy."""
        hu = self.hu
        self._add_spine(add, z0, z1)
        self._add_ribs(add)
        sy = self.cav_cy - self.cav_ay - 10.0
        zs0, zs1 = self.heart_center[2] - 40.0, self.carina + 15.0
        add(Box([-15, sy - 6, zs0], [15, sy + 6, zs1]), hu["cortex"], Tissue.BONE, ORDER_BONE)
        add(Box([-12, sy - 3.5, zs0 + 3], [12, sy + 3.5, zs1 - 3]), hu["marrow"], Tissue.MARROW, ORDER_BONE + 0.1)

    def _add_lung_trees(self, add) -> None:
        """Lung vessels and airways (the bronchovascular trees)."""
        hu = self.hu
        lung_or_vessel = LUNG | {int(Tissue.VESSEL)}
        for seg in self.vessels:
            add(Capsule(seg.a, seg.b, seg.ra, seg.rb), hu.get("pa_blood", hu["blood"]), Tissue.VESSEL,
                ORDER_LUNG_VESSELS, LUNG)
        for seg in self.airways:
            if seg.generation == 0:
                continue
            wall = self.wall_thickness(seg.ra)
            add(Capsule(seg.a, seg.b, seg.ra + wall, seg.rb + wall), hu["airway_wall"], Tissue.AIRWAY_WALL,
                ORDER_LUNG_AIRWAYS, lung_or_vessel)
        for seg in self.airways:
            if seg.generation == 0:
                continue
            add(Capsule(seg.a, seg.b, seg.ra, seg.rb), -1000.0, Tissue.AIRWAY, ORDER_LUNG_AIRWAYS + 0.1,
                lung_or_vessel | {int(Tissue.AIRWAY_WALL)})

    def _central_airways(self) -> list[Segment]:
        return [s for s in self.airways if s.generation <= 1 and s.side == "central"] + [
            s for s in self.airways if s.generation == 0 and s.side != "central"
        ]

    def pulmonary_arteries(self) -> list[Capsule]:
        """The main pulmonary artery, then the right and left main pulmonary arteries."""
        hc, hr, k = self.heart_center, self.heart_r, self.pa_scale
        p0 = np.array([hc[0] + 10, hc[1] - 0.6 * self.heart_half_depth(), hc[2] + 0.6 * hr[2]])
        p1 = np.array([8.0, -5.0 + self.cav_cy, self.carina - 12])
        caps = [Capsule(p0, p1, 13.0 * k, 12.0 * k)]
        for side in ("right", "left"):
            caps.append(Capsule(p1, self.hila[side], 10.0 * k, 8.0 * k))
        return caps

    def _add_spine(self, add, z0, z1):
        hu = self.hu
        z = self.z_bottom - 20.0
        height = 24.0
        r = self.vb_r
        y = self.vb_y
        canal_y = y + r + 8.0
        back = self.body_ay - self.fat_mm - 4.0
        while z < z1:
            add(EllipticCylinder(0, y, 1.1 * r, r, z, z + height), hu["cortex"], Tissue.BONE, ORDER_BONE)
            add(EllipticCylinder(0, y, 1.1 * r - 2.0, r - 2.0, z + 1.5, z + height - 1.5), hu["marrow"],
                Tissue.MARROW, ORDER_BONE + 0.1)
            zm = z + height / 2
            # Posterior arch and spinous process around the canal.
            add(Capsule([-14, canal_y, zm], [14, canal_y, zm], 7.0), hu["cortex"], Tissue.BONE, ORDER_BONE)
            add(Capsule([0, canal_y + 6, zm], [0, back, zm - 12], 5.0), hu["cortex"], Tissue.BONE, ORDER_BONE)
            z += height + 5.0
        add(EllipticCylinder(0, canal_y, 8.0, 7.0, z0, z1), hu["fluid"], Tissue.SPINAL_CANAL, ORDER_BONE + 0.2)

    def _add_ribs(self, add):
        hu = self.hu
        theta = np.deg2rad(np.linspace(12, 150, 7))
        for k in range(12):
            zk = self.apex + 15.0 - k * self.rib_gap
            f = max(float(self.profile(np.float64(zk))), 0.5)
            th = theta if k < 9 else theta[:5]
            for s in (-1, 1):
                ax, ay = (self.cav_ax + 5) * f, (self.cav_ay + 5) * f
                pts = np.stack([s * ax * np.sin(th), self.cav_cy + ay * np.cos(th),
                                zk - self.rib_drop * (1 - np.cos(th)) / 2], axis=1)
                for cap in tube(pts, self.rib_r):
                    add(cap, hu["cortex"], Tissue.BONE, ORDER_BONE)
                for cap in tube(pts, self.rib_r - 2.0):
                    add(cap, hu["marrow"], Tissue.MARROW, ORDER_BONE + 0.1)


class _Lens(Shape):
    """The mediastinum: |x| below a half-width that depends on depth and height."""

    def __init__(self, anatomy: Anatomy):
        self.a = anatomy

    def bounds(self):
        a = self.a
        return (np.array([-a.med_w_high, a.cav_cy - a.cav_ay - 10, a.z_bottom - 20]),
                np.array([a.med_w_high, a.cav_cy + a.cav_ay + 10, a.apex + 5]))

    def occupancy(self, x, y, z, spacing):
        d = np.abs(x) - self.a.med_halfwidth(y, z)
        return np.clip(0.5 - d / spacing[0], 0.0, 1.0).astype(np.float32)


# ---- sampling -----------------------------------------------------------------------------
def sample_anatomy(rng: np.random.Generator, tree_rng: np.random.Generator) -> Anatomy:
    """A normal patient; `tree_rng` grows the vessel and airway trees."""
    u = rng.uniform
    body_ax = u(145, 185)
    body_ay = body_ax * u(0.62, 0.72)
    fat, muscle = u(8, 28), u(8, 13)
    cav_ax = body_ax - fat - muscle - 6.0
    cav_ay = body_ay - fat - muscle - 6.0
    dome_r = 0.0
    dome_l = -u(10, 25)
    apex = u(200, 235)
    carina = apex - u(85, 100)
    heart_rz = u(45, 55)
    hu = {
        "fat": u(-110, -85), "muscle": u(35, 55), "blood": u(35, 50), "liver": u(50, 65),
        "soft": u(30, 45), "fluid": u(5, 18), "cortex": u(750, 950), "marrow": u(180, 300),
        "lung": u(-870, -830), "lung_gradient": u(15, 35), "airway_wall": u(30, 60), "table": u(150, 300),
        "pericardial_fluid": u(5, 18),
    }
    vb_r = u(16, 20)
    a = Anatomy(
        body_ax=body_ax, body_ay=body_ay, fat_mm=fat, muscle_mm=muscle,
        cav_ax=cav_ax, cav_ay=cav_ay, cav_cy=u(0, 6),
        dome_r=dome_r, dome_l=dome_l, apex=apex, z_round=apex - u(80, 110), carina=carina,
        z_bottom=dome_l - u(50, 80), z_top=apex + u(15, 40),
        heart_center=np.array([u(10, 22), 0.0, heart_rz - u(15, 25)]),
        heart_r=np.array([u(1.15, 1.35) * 48.0, u(0.8, 0.95) * 48.0, heart_rz]),
        heart_theta=u(25, 40),
        vb_r=vb_r, vb_y=0.0, med_w_low=u(18, 24), med_w_high=u(26, 34),
        hu=hu,
        oblique={s: (apex - u(60, 80), dome_r + u(-5, 20)) for s in ("right", "left")},
        z_horizontal=0.0,
        rib_gap=u(20, 23), rib_drop=u(60, 90), rib_r=u(4.5, 6.0), trachea_r=u(8, 10.5),
    )
    a.vb_y = a.cav_cy + cav_ay - vb_r - u(8, 14)
    a.z_horizontal = a.heart_center[2] + u(30, 50)
    a.set_heart_ratio(u(0.38, 0.46))
    _add_great_vessels(a, u)
    _grow_trees(a, tree_rng)
    return a


def _add_great_vessels(a: Anatomy, u) -> None:
    hc, hr = a.heart_center, a.heart_r
    r_asc, r_desc = u(13, 17), u(10, 13)
    root = np.array([hc[0] - 12.0, hc[1] - 0.2 * a.heart_half_depth(), hc[2] + 0.6 * hr[2]])
    asc_top = np.array([-12.0, a.cav_cy - 0.35 * a.cav_ay, a.carina + 5.0])
    desc_top = np.array([24.0, a.vb_y - 6.0, a.carina + 5.0])
    arch_h = u(20, 30)
    phi = np.linspace(0, np.pi, 7)[1:-1]
    w = (1 - np.cos(phi)) / 2
    arch = asc_top[None, :] + w[:, None] * (desc_top - asc_top)[None, :]
    arch[:, 2] += arch_h * np.sin(phi)
    desc_bot = np.array([16.0, a.vb_y - a.vb_r - 4.0, a.z_bottom - 20.0])
    pts = np.vstack([root, (root + asc_top) / 2, asc_top, arch, desc_top, desc_bot])
    radii = np.concatenate([[r_asc] * 3, np.linspace(r_asc, r_desc, len(arch) + 2)[1:-1], [r_desc, r_desc]])
    a.aorta = (pts, radii)
    svc_x = asc_top[0] - r_asc - 11.0
    a.svc = (np.array([[svc_x, a.cav_cy - 0.3 * a.cav_ay, a.z_top + 20], [svc_x + 4, hc[1] - 10, hc[2] + 0.5 * hr[2]]]),
             np.array([9.0, 10.0]))
    for side, s in (("right", -1), ("left", 1)):
        a.hila[side] = np.array([s * (a.med_w_high + 14.0), a.cav_cy + 5.0 + 4 * s, a.carina - 12 - 6 * s])


def _grow_trees(a: Anatomy, rng: np.random.Generator) -> None:
    tx, ty = a.trachea_xy
    top = np.array([tx, ty, a.z_top + 20])
    carina = np.array([tx, ty, a.carina])
    rt = a.trachea_r
    airways = [Segment(top, carina, rt, rt, "central", 0)]
    ends = {}
    for side, s, drop, rr in (("right", -1, 22.0, 0.75), ("left", 1, 32.0, 0.68)):
        end = np.array([s * (a.med_w_low + 10.0), ty + 10.0, a.carina - drop])
        airways.append(Segment(carina, end, rt * rr, rt * rr * 0.9, "central", 1))
        ends[side] = (end, rt * rr * 0.9)
    # Lobar bronchi: (side, lobe, direction).
    lobar = [("right", "RUL", (-0.7, 0.0, 0.7)), ("right", "RML", (-0.45, -0.8, -0.4)),
             ("right", "RLL", (-0.3, 0.45, -0.85)), ("left", "LUL", (0.6, -0.4, 0.65)),
             ("left", "LLL", (0.35, 0.45, -0.8))]
    roots = []
    for side, lobe, d in lobar:
        start, r = ends[side]
        d = _unit(d)
        r_lobar = r * 0.62
        a.lobar_roots[lobe] = (start, d, r_lobar)
        roots.append((start, d, r_lobar, 22.0, side))
    a.airways = airways + _grow(a, roots, rng, generations=4, length_ratio=0.8, radius_ratio=0.74, min_r=1.0, gen0=1)
    # Companion arteries beside each airway, plus arterial and venous trees from the hila.
    vessels = []
    for seg in a.airways:
        if seg.generation < 1 or seg.side == "central":
            continue
        d = _unit(seg.b - seg.a)
        off = _unit(np.cross(d, [0.3, 0.2, 1.0])) * (seg.ra + a.wall_thickness(seg.ra) + 0.8 * seg.ra + 1.0)
        seg.pair = len(vessels)
        vessels.append(Segment(seg.a + off, seg.b + off, 0.9 * seg.ra, 0.9 * seg.rb, seg.side, seg.generation))
    tree_roots = []
    for side, s in (("right", -1), ("left", 1)):
        h = a.hila[side]
        for d in ((s, 0.0, 1.0), (s * 0.5, -0.3, 1.0), (s, -0.6, 0.2), (s, 0.7, -0.2), (s, 0.6, 0.6),
                  (s, -0.3, -0.9), (s * 0.7, 0.6, -0.8), (s, 0.1, -0.5)):
            tree_roots.append((h, _unit(d), 5.5, 30.0, side))
        hv = np.array([s * (a.med_w_low + 6.0), a.heart_center[1] + 0.5 * a.heart_half_depth(), a.heart_center[2] + 20])
        for d in ((s, 0.2, 0.6), (s, 0.5, -0.5)):
            tree_roots.append((hv, _unit(d), 5.0, 28.0, side))
    vessels += _grow(a, tree_roots, rng, generations=6, length_ratio=0.8, radius_ratio=0.74, min_r=0.7, gen0=1)
    a.vessels = vessels


def _grow(a: Anatomy, roots, rng, generations, length_ratio, radius_ratio, min_r, gen0) -> list[Segment]:
    """Grow bifurcating trees breadth-first; a branch stops where it would leave the lung."""
    out: list[Segment] = []
    frontier = list(roots)
    for g in range(generations):
        if not frontier:
            break
        starts = np.array([f[0] for f in frontier])
        dirs = np.array([f[1] for f in frontier])
        radii = np.array([f[2] for f in frontier])
        lengths = np.array([f[3] for f in frontier]) * rng.uniform(0.8, 1.2, len(frontier))
        ends = starts + dirs * lengths[:, None]
        # A root branch leaves the mediastinum, so only its end must be in the lung.
        ok = a.in_lung(ends, radii + 1.0)
        perp = rng.normal(size=(len(frontier), 3))
        angles = np.deg2rad(rng.uniform(18, 38, size=(len(frontier), 2)))
        new = []
        for i, (start, d, r, length, side) in enumerate(frontier):
            if not ok[i]:
                continue
            rb = r * (0.5 + 0.5 * radius_ratio)
            out.append(Segment(start, ends[i], r, rb, side, gen0 + g))
            v = perp[i] - (perp[i] @ d) * d
            v = _unit(v)
            outward = _unit(ends[i] - a.hila[side])
            for sign, ang in ((1, angles[i, 0]), (-1, angles[i, 1])):
                nd = _unit(np.cos(ang) * d + sign * np.sin(ang) * v + 0.25 * outward)
                if r * radius_ratio >= min_r:
                    new.append((ends[i], nd, r * radius_ratio, length * length_ratio, side))
        frontier = new
    return out
