"""How much of each planted finding survives on an encoder's grid: a measurement, not a guess.

For one phantom and one finding the same patient is rendered twice without noise, with and without
the finding (case.py keeps patient, position and spacing the same), and both go through the
encoder's preprocessing (resample to its grid, clip to its HU range). What differs is the finding as
the encoder can see it. The noise it must be seen against is the case's own noise after the same
preprocessing (the noisy minus the clean render, SD over the body). Per case it reports the planted
size (the truth's `size_mm`, and its smallest part), how many voxels of the encoder grid (and of
the phantom's own grid) change by more than that noise SD, the largest change and the mean change
over those voxels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.model_configs import PreprocessConfig
from engine.synth.case import generate_case
from engine.synth.findings import canonical_finding


@dataclass(frozen=True)
class CaseVisibility:
    finding: str
    seed: int
    size_mm: float  # the truth's size_mm (else its largest part's; for walls and effusions their thickness)
    smallest_part_mm: float  # the smallest planted part (a single calcification, one band)
    phantom_voxel_mm: tuple[float, float, float]  # the phantom's own spacing
    noise_sd_hu: float  # the noise left on the encoder grid
    changed_phantom: int  # voxels of the phantom's grid changed by more than the phantom's noise SD
    changed_grid: int  # voxels of the encoder grid changed by more than noise_sd_hu
    peak_hu: float  # the largest |difference| on the encoder grid
    mean_changed_hu: float  # the mean |difference| over the changed_grid voxels (0 when none)

    def to_dict(self) -> dict:
        return asdict(self)


def to_hu(x: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The one plain [-1, 1] channel of `config.base` back to HU (clipped to `config.hu_range`)."""
    lo, hi = config.hu_range
    return x * ((hi - lo) / 2) + (lo + hi) / 2


def changed_voxels(with_finding: np.ndarray, without: np.ndarray, noise_sd: float) -> tuple[int, float, float]:
    """(voxels whose |difference| exceeds noise_sd, the largest |difference|, the mean |difference|
    over those voxels). The core of the measurement; arrays of the same shape, in HU."""
    diff = np.abs(np.asarray(with_finding, np.float64) - np.asarray(without, np.float64))
    over = diff > noise_sd
    n = int(over.sum())
    return n, float(diff.max(initial=0.0)), float(diff[over].mean()) if n else 0.0


def _grid_hu(hu: np.ndarray, spacing, config: PreprocessConfig) -> np.ndarray:
    from engine.preprocess import preprocess_array

    return to_hu(preprocess_array(hu, spacing, config.base).numpy()[0], config)


def _sizes(truth: dict) -> tuple[float, float]:
    """(the truth's size_mm, or its largest part's when it has none; its smallest part's)."""
    sizes = [float(p["size_mm"]) for p in truth.get("parts", ()) if "size_mm" in p]
    size = float(truth.get("size_mm", max(sizes, default=0.0)))
    return size, min(sizes, default=size)


def measure_case(finding: str, seed: int, config: PreprocessConfig, scale: float) -> CaseVisibility:
    """One phantom (`seed`, rendered at `scale`) with and without `finding`, on `config`'s grid."""
    name = canonical_finding(finding)
    clean = generate_case(seed, [name], scale, noise=False)
    plain = generate_case(seed, [], scale, noise=False)
    noisy = generate_case(seed, [], scale, noise=True)
    body = (plain.hu > -950) & (plain.hu < config.hu_range[1] - 100)
    noise_phantom = float((noisy.hu - plain.hu)[body].std())
    changed_phantom = changed_voxels(clean.hu, plain.hu, noise_phantom)[0]
    g_clean, g_plain = _grid_hu(clean.hu, clean.spacing, config), _grid_hu(plain.hu, plain.spacing, config)
    g_noisy = _grid_hu(noisy.hu, noisy.spacing, config)
    g_body = (g_plain > -950) & (g_plain < config.hu_range[1] - 100)
    noise_sd = float((g_noisy - g_plain)[g_body].std())
    n, peak, mean = changed_voxels(g_clean, g_plain, noise_sd)
    truth = clean.truth[0]
    return CaseVisibility(name, seed, *_sizes(truth),
                          tuple(round(float(s), 3) for s in clean.spacing), round(noise_sd, 2),
                          changed_phantom, n, round(peak, 1), round(mean, 1))


def summarise(cases: list[CaseVisibility], config: PreprocessConfig, patch_voxels: int) -> dict:
    """Per finding: min / median / max of each measure over the cases, and the share of one
    encoder patch (`patch_voxels` voxels) that the median changed region would fill."""

    def mmm(values) -> list[float]:
        v = np.asarray(values, float)
        return [round(float(v.min()), 1), round(float(np.median(v)), 1), round(float(v.max()), 1)]

    out = {}
    for name in dict.fromkeys(c.finding for c in cases):
        cs = [c for c in cases if c.finding == name]
        med_changed = float(np.median([c.changed_grid for c in cs]))
        out[name] = {
            "cases": len(cs), "size_mm": mmm([c.size_mm for c in cs]),
            "smallest_part_mm": mmm([c.smallest_part_mm for c in cs]),
            "changed_phantom": mmm([c.changed_phantom for c in cs]), "changed_grid": mmm([c.changed_grid for c in cs]),
            "patch_fraction": round(med_changed / patch_voxels, 3), "peak_hu": mmm([c.peak_hu for c in cs]),
            "mean_changed_hu": mmm([c.mean_changed_hu for c in cs]), "noise_sd_hu": mmm([c.noise_sd_hu for c in cs]),
            "grid_voxel_mm": list(config.spacing_mm),
        }
    return out


def visibility_markdown(summary: dict, config: PreprocessConfig, patch_mm: tuple[float, float, float]) -> str:
    """The per-finding table (min / median / max over the cases), with the grid it was measured on."""
    sx, sy, sz = config.spacing_mm
    head = (f"Encoder grid voxel {sx:g} x {sy:g} x {sz:g} mm, patch {patch_mm[0]:g} x {patch_mm[1]:g} x "
            f"{patch_mm[2]:g} mm. Values min / median / max over the phantoms.\n\n"
            "| finding | planted size mm | smallest part mm | voxels changed > noise SD, phantom grid | "
            "voxels changed > noise SD, encoder grid | median share of one patch | peak abs dHU | "
            "mean abs dHU over changed | noise SD HU (encoder grid) |\n|---|---|---|---|---|---:|---|---|---|\n")

    def f(v):
        return " / ".join(f"{x:g}" for x in v)

    rows = [f"| {n} | {f(s['size_mm'])} | {f(s['smallest_part_mm'])} | {f(s['changed_phantom'])} | "
            f"{f(s['changed_grid'])} | {s['patch_fraction']:.2f} | {f(s['peak_hu'])} | {f(s['mean_changed_hu'])} | "
            f"{f(s['noise_sd_hu'])} |" for n, s in summary.items()]
    return head + "\n".join(rows) + "\n"
