"""Per-token finding targets from a phantom dataset's truth (DIR/phantom_truth.json), for the
auxiliary token loss of `rad3d train-encoder`.

One volume label says only that a finding lies somewhere in 384 tokens; a from-scratch encoder
trained on a few hundred such labels memorises the volumes. The phantoms know where each finding
was planted, so every token can get its own 0/1 target: does this token's patch touch the finding?
That gives each volume hundreds of supervised tokens. The targets are computed in the encoder's
input grid: the truth's positions (mm from the centre of voxel (0, 0, 0) along the volume axes)
are taken through the same resample and centre crop/pad as engine.preprocess, then binned into
(t, h, w) patches (D = z, H = x, W = y, as the encoder sees the volume).

A finding's region is a ball per planted part (centre, radius = half its size, at least
MIN_RADIUS_MM). Findings spread over both lungs (DIFFUSE) have no useful centre: every token of a
volume that has one gets the volume's label, which still asks each token to see it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import DatasetError
from engine.preprocess import PreprocessConfig, crop_or_pad_window, resampled_size

TRUTH_FILE = "phantom_truth.json"
MIN_RADIUS_MM = 8.0
DIFFUSE = frozenset({"Emphysema", "Mosaic attenuation pattern", "Interlobular septal thickening",
                     "Peribronchial thickening"})
# Findings whose recorded size is not their extent: a fixed radius around the recorded centre.
RADIUS_MM = {"Pericardial effusion": 70.0, "Bronchiectasis": 50.0, "Pleural effusion": 45.0}


def read_truth(data_dir: str | Path) -> dict[str, dict]:
    """VolumeName -> the case's truth (shape, spacing_mm, findings) from DIR/phantom_truth.json."""
    path = Path(data_dir) / TRUTH_FILE
    try:
        cases = json.loads(path.read_text())["cases"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"the per-token loss needs the phantom truth that `rad3d synth` writes ({err}); "
                           "for other data pass --token-loss-weight 0", path) from None
    return cases


def _balls(finding: dict) -> list[tuple[np.ndarray, float]]:
    """(centre mm, radius mm) of each planted part of one finding."""
    name = finding["finding"]
    if finding.get("text_only"):  # said in the report only (inspect-like history): nowhere in the image
        return []
    parts = finding.get("parts") or [finding]
    out = []
    for part in parts:
        radius = RADIUS_MM.get(name, max(float(part.get("size_mm", 0.0)) / 2, MIN_RADIUS_MM))
        out.append((np.asarray(part["center_mm"], dtype=np.float64), radius))
    if "tip_mm" in finding:  # a device's lead or catheter ends far from the device itself
        out.append((np.asarray(finding["tip_mm"], dtype=np.float64), MIN_RADIUS_MM))
    return out


def _axis_map(n: int, spacing: float, target: float, size: int):
    """Volume-axis mm -> output voxel index (float) of preprocess's resample + crop/pad, and the
    output voxel pitch in mm."""
    n_out = resampled_size(n, spacing, target)
    start, _, before, _ = crop_or_pad_window(n_out, size)
    pitch = spacing * n / n_out

    def to_out(mm):
        return (mm / spacing + 0.5) * n_out / n - 0.5 - start + before

    return to_out, pitch


def token_targets(case: dict, label_names: list[str] | tuple[str, ...], config: PreprocessConfig,
                  patch_size: int, temporal_patch_size: int) -> np.ndarray:
    """(t, h, w, n_labels) float32 0/1: which findings of `case` (one entry of the truth's
    "cases") touch each token's patch of the encoder input."""
    sx, sy, sz = config.spacing_mm
    tx, ty, tz = config.shape_xyz
    grid = (tz // temporal_patch_size, tx // patch_size, ty // patch_size)
    out = np.zeros((*grid, len(label_names)), dtype=np.float32)
    index = {n: i for i, n in enumerate(label_names)}
    maps = [_axis_map(int(n), float(s), t, size)
            for n, s, t, size in zip(case["shape"], case["spacing_mm"], (sx, sy, sz), (tx, ty, tz))]
    # Token k along an axis covers output voxels [k*p, (k+1)*p): its box, edge to edge.
    edges = [np.arange(g) * p - 0.5 for g, p in zip((grid[1], grid[2], grid[0]),
                                                     (patch_size, patch_size, temporal_patch_size))]
    sizes = (patch_size, patch_size, temporal_patch_size)
    for finding in case["findings"]:
        j = index.get(finding["finding"])
        if j is None:
            continue
        if finding["finding"] in DIFFUSE:
            out[..., j] = 1.0
            continue
        for centre, radius in _balls(finding):
            gaps = []
            for a, ((to_out, pitch), lo, p) in enumerate(zip(maps, edges, sizes)):
                c = to_out(centre[a])
                gaps.append(np.maximum(np.maximum(lo - c, c - (lo + p)), 0.0) * pitch)  # mm to the box
            dx, dy, dz = gaps
            dist2 = dz[:, None, None] ** 2 + dx[None, :, None] ** 2 + dy[None, None, :] ** 2
            out[..., j] = np.maximum(out[..., j], dist2 <= radius ** 2)
    return out


def dataset_token_targets(data_dir: str | Path, names: list[str], label_names, config: PreprocessConfig,
                          patch_size: int, temporal_patch_size: int) -> np.ndarray:
    """(N, t, h, w, n_labels) token targets of `names`, in that order; every name must be in the truth."""
    cases = read_truth(data_dir)
    missing = [n for n in names if n not in cases]
    if missing:
        raise DatasetError(f"phantom truth lacks {len(missing)} case(s), e.g. {missing[:3]}",
                           Path(data_dir) / TRUTH_FILE)
    return np.stack([token_targets(cases[n], label_names, config, patch_size, temporal_patch_size) for n in names])
