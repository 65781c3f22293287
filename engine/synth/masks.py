"""Where each planted finding is: one boolean voxel mask per finding of a phantom, on the case's
own grid, regenerated from its seeds (the phantoms themselves are unchanged).

A finding's mask is the voxels its planting changed: the case rendered with and without that
finding's own layers, compared inside the layers' bounding box (nothing outside it can change).
Findings drawn by changing the anatomy instead of adding layers (a bigger heart, thicker bronchial
walls) are compared against the same patient generated without them; for the heart's two
findings the object is the organ itself, not the rim by which it grew.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from engine.synth.canvas import Grid, Tissue, render
from engine.synth.case import CasePlan, plan_case

HU_CHANGE = 25.0  # HU; above partial-volume rounding of a noiseless render, below any planted contrast
TISSUE_OBJECTS = {
    "Cardiomegaly": frozenset({int(Tissue.HEART), int(Tissue.PERICARDIAL_FLUID)}),
    "Pericardial effusion": frozenset({int(Tissue.PERICARDIAL_FLUID)}),
}


def _sub_grid(grid: Grid, layers: list) -> tuple[Grid, tuple[slice, slice, slice]] | None:
    boxes = [grid.index_box(layer.shape.bounds()) for layer in layers]
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    box = tuple(slice(min(b[k].start for b in boxes), max(b[k].stop for b in boxes)) for k in range(3))
    origin = tuple(o + s.start * d for o, s, d in zip(grid.origin, box, grid.spacing))
    return Grid(tuple(s.stop - s.start for s in box), grid.spacing, origin), box


def _changed(with_: tuple[np.ndarray, np.ndarray], without: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return (with_[1] != without[1]) | (np.abs(with_[0] - without[0]) > HU_CHANGE)


def _layered_mask(plan: CasePlan, name: str) -> np.ndarray:
    mask = np.zeros(plan.grid.shape, dtype=bool)
    sub = _sub_grid(plan.grid, plan.finding_layers[name])
    if sub is None:
        return mask
    grid, box = sub
    others = [la for n, layers in plan.finding_layers.items() if n != name for la in layers]
    mask[box] = _changed(render(plan.base_layers + others + plan.finding_layers[name], grid),
                         render(plan.base_layers + others, grid))
    return mask


def finding_masks(seed: int, findings: Iterable[str], scale: float, *, patient_seed: int | None = None,
                  recon_seed: int | None = None, only: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """{finding: bool (X, Y, Z) mask} for a phantom made by engine.synth.case.generate_case with the
    same arguments (the writer's truth records them: seeds = patient, scan (`seed`), recon);
    `only`: the findings to mask (default all planted)."""
    findings = list(findings)
    plan = plan_case(seed, findings, scale, patient_seed=patient_seed, recon_seed=recon_seed)
    wanted = [n for n in plan.finding_layers if only is None or n in set(only)]
    full = None
    masks = {}
    for name in wanted:
        if plan.finding_layers[name]:
            masks[name] = _layered_mask(plan, name)
            continue
        if full is None:
            full = render(plan.base_layers + [la for v in plan.finding_layers.values() for la in v], plan.grid)
        if name in TISSUE_OBJECTS:
            masks[name] = np.isin(full[1], list(TISSUE_OBJECTS[name]))
            continue
        rest = plan_case(seed, [n for n in findings if n != name], scale, patient_seed=patient_seed,
                         recon_seed=recon_seed)
        if rest.grid != plan.grid:  # the finding moved the field of view: no voxelwise comparison
            masks[name] = np.zeros(plan.grid.shape, dtype=bool)
            continue
        masks[name] = _changed(full, render(rest.base_layers + [la for v in rest.finding_layers.values() for la in v],
                                            rest.grid))
    return masks
