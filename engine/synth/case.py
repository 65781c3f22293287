"""One phantom case: anatomy + planted findings → HU volume, tissue map, truth and report.

Random streams are separate per purpose so that a case with and without a given finding is the
same patient, position, spacing and noise: anatomy and trees come from `patient_seed`, position
and each finding's parameters from `seed` (one stream per finding), spacing and noise from
`recon_seed`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from engine.errors import ConfigError
from engine.synth.anatomy import Anatomy, sample_anatomy
from engine.synth.canvas import Grid, render
from engine.synth.domains import DEFAULT_DOMAIN, get_domain
from engine.synth.findings import canonical_finding
from engine.synth.reports import Report

HU_MIN, HU_MAX = -1024.0, 3071.0
Z_SPACINGS_MM = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
Z_SPACING_WEIGHTS = (0.3, 0.15, 0.25, 0.15, 0.1, 0.05)


@dataclass
class SynthCase:
    """hu: float32 (X, Y, Z) in rad3d's canonical L, P, S order; tissue: uint8 codes
    (canvas.Tissue); truth: one dict per planted finding, positions in mm from the centre of
    voxel (0, 0, 0) along the volume axes (`center_mm`) and as voxel indices (`center_voxel`)."""

    hu: np.ndarray
    tissue: np.ndarray
    spacing: tuple[float, float, float]
    truth: list[dict]
    report: Report
    labels: dict[str, int]
    anatomy: Anatomy
    grid: Grid
    meta: dict = field(default_factory=dict)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stream)])


def normalise_findings(findings: Iterable[str] | Mapping[str, dict] | None,
                       domain: str = DEFAULT_DOMAIN) -> dict[str, dict]:
    """Names (any case/spacing, see canonical_finding) → options dict, in label-set order."""
    if findings is None:
        return {}
    label_set = get_domain(domain).label_set
    items = findings.items() if isinstance(findings, Mapping) else ((f, {}) for f in findings)
    chosen = {canonical_finding(k, label_set): dict(v or {}) for k, v in items}
    return {n: chosen[n] for n in label_set.names if n in chosen}


def make_grid(anatomy: Anatomy, scale: float, pos_rng: np.random.Generator, recon_rng: np.random.Generator):
    """Field of view, matrix and spacing: ~512² in-plane at scale 1, divided by `scale`."""
    if not (0.2 <= scale <= 32):
        raise ConfigError(f"scale must be between 0.2 and 32, got {scale}")
    margin = pos_rng.uniform(30, 90)
    fov = float(np.clip(2 * anatomy.body_ax + margin, 0.6 * 512, 0.9 * 512))
    fx, fy, fz = pos_rng.uniform(-15, 15), pos_rng.uniform(12, 32), pos_rng.uniform(-8, 8)
    z_mm = float(recon_rng.choice(Z_SPACINGS_MM, p=Z_SPACING_WEIGHTS))
    n_xy = max(16, int(round(512 / scale)))
    sxy = round(fov / n_xy, 6)
    sz = round(z_mm * scale, 6)
    z0, z1 = anatomy.z_bottom + fz, anatomy.z_top + fz
    n_z = max(8, int(math.ceil((z1 - z0) / sz)) + 1)
    origin = (fx - (n_xy - 1) / 2 * sxy, fy - (n_xy - 1) / 2 * sxy, z0)
    return Grid((n_xy, n_xy, n_z), (sxy, sxy, sz), origin), z_mm


@dataclass
class CasePlan:
    """A phantom before rendering: the anatomy's layers, each planted finding's own layers and
    truth (patient frame), and the voxel grid. `generate_case` renders it; `engine.synth.masks`
    renders each finding's layers alone to find the voxels it changed."""

    anatomy: Anatomy
    base_layers: list
    finding_layers: dict[str, list]
    truth: list[dict]
    grid: Grid
    z_mm: float


def plan_case(seed: int, findings: Iterable[str] | Mapping[str, dict] | None = None, scale: float = 1.0, *,
              patient_seed: int | None = None, recon_seed: int | None = None,
              domain: str = DEFAULT_DOMAIN) -> CasePlan:
    """Everything `generate_case` draws, in the same random streams, short of rendering."""
    dom = get_domain(domain)
    chosen = normalise_findings(findings, domain)
    patient_seed = seed if patient_seed is None else patient_seed
    recon_seed = seed if recon_seed is None else recon_seed
    anatomy = sample_anatomy(_rng(patient_seed, 1), _rng(patient_seed, 2))
    if dom.enhance is not None:  # the contrast phase is the scan's, not the patient's
        dom.enhance(anatomy, _rng(seed, 8))
    names = dom.label_set.names
    rngs = {n: _rng(seed, 100 + names.index(n)) for n in chosen}
    params = {n: dom.planters[n].adjust(anatomy, rngs[n], chosen[n]) for n in chosen}
    anatomy.fit_heart()
    base = anatomy.layers() + (dom.extra_layers(anatomy) if dom.extra_layers else [])
    own, truth = {}, []
    for n in chosen:
        own[n], t = dom.planters[n].plant(anatomy, rngs[n], params[n])
        truth.append({"finding": n, **t})
    grid, z_mm = make_grid(anatomy, scale, _rng(seed, 3), _rng(recon_seed, 5))
    return CasePlan(anatomy, base, own, truth, grid, z_mm)


def generate_case(
    seed: int,
    findings: Iterable[str] | Mapping[str, dict] | None = None,
    scale: float = 1.0,
    *,
    patient_seed: int | None = None,
    recon_seed: int | None = None,
    noise: bool = True,
    domain: str = DEFAULT_DOMAIN,
) -> SynthCase:
    """A phantom with exactly `findings` planted (names of the domain's labels, CT-RATE's by
    default; a mapping gives per-finding options such as {"Lung nodule": {"lobe": "RUL",
    "diameter_mm": 12}}). `domain`: engine.synth.domains (ct-rate-like or inspect-like)."""
    dom = get_domain(domain)
    recon_seed = seed if recon_seed is None else recon_seed
    plan = plan_case(seed, findings, scale, patient_seed=patient_seed, recon_seed=recon_seed, domain=domain)
    grid, z_mm = plan.grid, plan.z_mm
    hu, tissue = render(plan.base_layers + [la for layers in plan.finding_layers.values() for la in layers], grid)
    if noise:
        nrng = _rng(recon_seed, 6)
        sigma = nrng.uniform(10, 20)
        hu += nrng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sigma)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    truth = [_to_volume_frame(t, grid) for t in plan.truth]
    labels = {n: int(n in plan.finding_layers) for n in dom.label_set.names}
    meta = {"slice_thickness_mm": z_mm * scale, "nominal_slice_mm": z_mm}
    report = dom.write_report(truth, _rng(seed, 4), meta)
    return SynthCase(hu, tissue, grid.spacing, truth, report, labels, plan.anatomy, grid, meta)


def _to_volume_frame(t: dict, grid: Grid) -> dict:
    out = {}
    for k, v in t.items():
        if k == "center_mm":
            out["center_mm"] = grid.to_volume_mm(v)
            out["center_voxel"] = grid.to_voxel(v)
        elif k in ("tip_mm", "start_mm", "end_mm"):
            out[k] = grid.to_volume_mm(v)
        elif k == "z_range_mm":
            out[k] = [round(float(z - grid.origin[2]), 2) for z in v]
        elif k == "parts":
            out["parts"] = [_to_volume_frame(p, grid) for p in v]
        else:
            out[k] = v
    return out
