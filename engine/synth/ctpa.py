"""The inspect-like domain's image side: a CT pulmonary angiogram (CTPA) phase on the phantom
anatomy, and planters for the findings of the inspect-like label set (the 21 entities of the
RAD3D paper's Table 6, which the authors extracted from INSPECT's reports).

Contrast: the pulmonary arteries and the right heart carry the bolus (300–420 HU), the aorta and
left heart less (200–300 HU), the myocardium enhances (90–130 HU). A pulmonary embolism is a
filling defect: a clot of 20–60 HU filling most of the lumen of contrast-filled arteries, on one
side or both, at the main, lobar or segmental level.

Planted in the image (the phantom has the anatomy for them): Embolism, Opacities (ground glass),
Nodules, Mass (a nodule over 3 cm), Metastases (several small nodules in both lungs), Atelectasis,
Consolidation, Effusions (pleural), Edema (interstitial: septal lines), Thickening (bronchial
walls), Lymphadenopathies, Hypertension (a dilated main pulmonary artery).
Only in the text (`TEXT_ONLY`): Disease, Infection, Aspiration, Pneumonia, Metastatic, Malignancy,
Lesions, Node, Others. They are interpretations or history (pneumonia, infection, aspiration,
malignancy, metastatic disease, "disease"), or what the phantom has no organ or scale for (a
liver lesion is not drawn, nor are normal-sized nodes or degenerative changes); the report says
them, the image cannot show them, so a classifier should not learn them from pixels.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError
from engine.synth.anatomy import ORDER_HEART, ORDER_LUNG_VESSELS, Anatomy
from engine.synth.canvas import LOBES, Layer, Tissue
from engine.synth.findings import (
    _LUNGISH,
    LOBE_NAMES,
    LOBE_SIDE,
    Planter,
    _atelectasis,
    _consolidation,
    _ground_glass,
    _keep,
    _lymphadenopathy,
    _nodule,
    _peribronchial,
    _peribronchial_adjust,
    _pick_side,
    _pleural_effusion,
    _point_in_lobe,
    _pt,
    _r,
    _septal,
    _sides,
)
from engine.synth.shapes import Capsule, Ellipsoid, sphere

LEVELS = ("main", "lobar", "segmental")
_GENERATION = {"lobar": 1, "segmental": 2}  # airway generation of the arteries' companion bronchi
TEXT_ONLY = ("Disease", "Infection", "Aspiration", "Pneumonia", "Metastatic", "Malignancy", "Lesions", "Node",
             "Others")


def enhance(a: Anatomy, rng: np.random.Generator) -> None:
    """The contrast phase of a CTPA: blood values per compartment (see the module's docstring)."""
    a.hu["pa_blood"] = float(rng.uniform(300, 420))
    a.hu["aorta_blood"] = float(rng.uniform(200, 300))
    a.hu["blood"] = float(rng.uniform(160, 240))  # venous return (SVC) between the two
    a.hu["myocardium"] = float(rng.uniform(90, 130))
    a.hu["liver"] += float(rng.uniform(20, 40))


def heart_chambers(a: Anatomy) -> list[Layer]:
    """Enhanced myocardium around two blood pools: the right heart (anterior, to the patient's
    right, pulmonary-artery contrast) and the left heart (aortic contrast)."""
    c = a.heart_center
    to_left_back = np.array([0.6, 0.8])  # from the right ventricle towards the left ventricle

    def pool(x, y, z):
        s = (x - c[0]) * to_left_back[0] + (y - c[1]) * to_left_back[1]
        return np.where(s < 0, a.hu["pa_blood"], a.hu["aorta_blood"]).astype(np.float32)

    inner = Ellipsoid(c, a.heart_r * 0.8, a.heart_axes())
    return [Layer(a.heart_shape(), a.hu["myocardium"], Tissue.HEART, ORDER_HEART + 0.01),
            Layer(inner, pool, Tissue.HEART, ORDER_HEART + 0.02, frozenset({int(Tissue.HEART)}))]


def _candidate_arteries(a: Anatomy, side: str, level: str) -> list[tuple[Capsule, str]]:
    """(artery, lobe) pairs on `side` at `level`; main: the right or left main pulmonary artery."""
    if level == "main":
        cap = a.pulmonary_arteries()[1 if side == "right" else 2]
        return [(cap, "RUL" if side == "right" else "LUL")]
    out = []
    for bronchus in a.airways:
        if bronchus.pair is None or bronchus.side != side or bronchus.generation != _GENERATION[level]:
            continue
        v = a.vessels[bronchus.pair]
        out.append((Capsule(v.a, v.b, v.ra, v.rb), a.lobe_of((v.a + v.b) / 2)))
    return out


def _embolism(a: Anatomy, rng, o):
    side = _pick_side(rng, o, 0.35)
    level = o.get("level") or str(rng.choice(LEVELS, p=(0.2, 0.35, 0.45)))
    if level not in LEVELS:
        raise ConfigError(f"embolism level must be one of {', '.join(LEVELS)}, got {level!r}")
    layers, parts = [], []
    for sd in _sides(side):
        arteries = _candidate_arteries(a, sd, level)
        if not arteries:  # the tree stopped short on this side: the clot sits in the main artery
            level, arteries = "main", _candidate_arteries(a, sd, "main")
        lobes = sorted({lobe for _, lobe in arteries}, key=lambda x: ("LL" not in x, x))  # lower lobes first
        lobe = lobes[0] if rng.random() < 0.6 else lobes[int(rng.integers(len(lobes)))]
        chosen = [cap for cap, lb in arteries if lb == lobe]
        k = 1 if level != "segmental" else int(rng.integers(1, min(3, len(chosen)) + 1))
        for i in sorted(rng.choice(len(chosen), size=k, replace=False)):
            cap = chosen[i]
            # In a main artery the clot sits past the bifurcation, wholly on its side of the midline.
            t0, t1 = (rng.uniform(0.35, 0.5), rng.uniform(0.85, 0.95)) if level == "main" else \
                (rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.9))
            p0, p1 = cap.a + t0 * (cap.b - cap.a), cap.a + t1 * (cap.b - cap.a)
            r = 0.8 * min(cap.ra, cap.rb)
            hu = rng.uniform(20, 60)
            # The clot displaces contrast: subtract it where the clot is, so a partly filled voxel
            # at a thin artery's edge darkens by the clot's share and never brightens.
            layers.append(Layer(Capsule(p0, p1, r), hu - a.hu["pa_blood"], Tissue.EMBOLUS,
                                ORDER_LUNG_VESSELS + 0.5, frozenset({int(Tissue.VESSEL)}), add=True))
            parts.append({"side": sd, "lobe": lobe, "level": level, "center_mm": _pt((p0 + p1) / 2),
                          "size_mm": _r(np.linalg.norm(p1 - p0)), "width_mm": _r(2 * r), "hu": _r(hu)})
    big = max(parts, key=lambda p: p["size_mm"])
    lobes = list(dict.fromkeys(p["lobe"] for p in parts))
    return layers, {"side": side, "level": level, "lobes": lobes, "location": _pe_location(side, level, lobes),
                    "center_mm": big["center_mm"], "size_mm": big["size_mm"], "parts": parts}


def _pe_location(side: str, level: str, lobes: list[str]) -> str:
    if level == "main":
        return {"bilateral": "right and left main pulmonary arteries"}.get(side, f"{side} main pulmonary artery")
    return " and ".join(LOBE_NAMES[x] for x in lobes) + f" {level} arteries"


def _hypertension_adjust(a: Anatomy, rng, o):
    a.pa_scale = float(o.get("scale") or rng.uniform(1.3, 1.55))
    return {"scale": a.pa_scale}


def _hypertension(a: Anatomy, rng, p):
    main = a.pulmonary_arteries()[0]
    return [], {"location": "main pulmonary artery", "diameter_mm": _r(2 * main.ra),
                "center_mm": _pt((main.a + main.b) / 2), "size_mm": _r(2 * main.ra)}


def _mass(a: Anatomy, rng, o):
    return _nodule(a, rng, {"diameter_mm": float(rng.uniform(32, 48)), **o})


def _metastases(a: Anatomy, rng, o):
    n = int(o.get("count") or rng.integers(4, 9))
    layers, parts = [], []
    for i in range(n):
        lobe = list(LOBES)[int(rng.integers(len(LOBES)))] if i > 1 else ("RLL", "LLL")[i]  # both lungs
        d = float(rng.uniform(5, 11))
        c = _point_in_lobe(a, rng, lobe, d / 2 + 3)
        layers.append(Layer(sphere(c, d / 2), rng.uniform(25, 60), Tissue.LESION, 40.15, _LUNGISH))
        parts.append({"lobe": lobe, "side": LOBE_SIDE[lobe], "center_mm": _pt(c), "size_mm": _r(d)})
    big = max(parts, key=lambda p: p["size_mm"])
    return layers, {"location": "both lungs", "side": "bilateral", "count": n, "center_mm": big["center_mm"],
                    "size_mm": big["size_mm"], "parts": parts}


def _text_only(a: Anatomy, rng, o):
    return [], {"text_only": True}


def _planter(fn) -> Planter:
    return Planter(_keep, fn)


PLANTERS: dict[str, Planter] = {
    "Embolism": _planter(_embolism),
    "Opacities": _planter(_ground_glass),
    "Nodules": _planter(_nodule),
    "Atelectasis": _planter(_atelectasis),
    "Thickening": Planter(_peribronchial_adjust, _peribronchial),
    "Effusions": _planter(_pleural_effusion),
    "Edema": _planter(_septal),
    "Consolidation": _planter(_consolidation),
    "Mass": _planter(_mass),
    "Lymphadenopathies": _planter(_lymphadenopathy),
    "Hypertension": Planter(_hypertension_adjust, _hypertension),
    "Metastases": _planter(_metastases),
    **{n: _planter(_text_only) for n in TEXT_ONLY},
}
