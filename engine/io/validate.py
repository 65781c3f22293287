"""Plausibility checks every reader runs before a volume leaves engine.io.

They catch the silent failures that would otherwise reach the encoder: wrong dimensionality,
NaNs, nonsense spacing, MR or normalised images, and the two CT-RATE traps (a NIfTI already in
HU rescaled again by the metadata CSV, or raw stored values whose rescale was forgotten).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.errors import VolumeError
from engine.volume import Volume, fill_value

MIN_AXIS_VOXELS = 8
MAX_AXIS_VOXELS = 2048
# Memory budget for reading one volume, checked from headers before any voxel is read: the float32
# HU array plus the stored array it is converted from. A 512 × 512 × 1000 thin-slice chest CT in
# int16 needs 1.5 GiB; 1024 × 1024 × 1024 fits; a header claiming 2000³ voxels does not.
MAX_VOLUME_BYTES = 6 * 2**30
MAX_VOXELS = MAX_VOLUME_BYTES // 6  # 4 bytes of float32 + 2 stored (int16)


@dataclass(frozen=True)
class SpacingLimits:
    """Largest plausible voxel spacing in mm: the two finest axes are in-plane, the coarsest is
    between slices (orientation-free, so a coronal reformat is judged like an axial series)."""

    in_plane_mm: float
    slice_mm: float
    why: str


# Clinical CT: in-plane 0.3-1 mm (a 512 matrix over a 15-50 cm field of view), slices 0.5-5 mm
# (10 mm in old or low-dose protocols).
CT_PRACTICE = SpacingLimits(5.0, 10.0, "CT practice")
# The project's own phantoms may be written on deliberately coarse grids (`rad3d synth --scale`).
PHANTOM_GRID = SpacingLimits(50.0, 50.0, "a downscaled phantom grid")

AIR_HU = -1000.0
# Air is -1000 HU and scanners clamp stored values at -1024; noise takes air a little below.
# Voxels far under that are impossible in a correctly rescaled CT, except a constant padding
# value outside the reconstruction circle (-2048, -3024, ...), which is excluded below.
LOWEST_PLAUSIBLE_HU = -1024.0 - 100.0
MAX_FRACTION_BELOW = 0.01
MIN_AIR_FRACTION = 0.001
MIN_MAX_HU = 100.0
_SAMPLE_VOXELS = 4_000_000


def squeeze_to_3d(array: np.ndarray, *, source: str) -> np.ndarray:
    """Drop trailing singleton axes beyond the third (NIfTI often stores (X, Y, Z, 1))."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(
            f"expected a 3D volume, got a {array.ndim}D array of shape {tuple(array.shape)}"
            + (" (a time series or multi-channel image?)" if array.ndim > 3 else ""),
            source,
        )
    return array


def check_volume(
    vol: Volume,
    *,
    source: str | None = None,
    min_axis_voxels: int = MIN_AXIS_VOXELS,
    spacing_limits: SpacingLimits = CT_PRACTICE,
) -> None:
    """Raise VolumeError naming `source` if `vol` is not a plausible CT in Hounsfield units."""
    source = source or vol.source
    hu = np.asarray(vol.hu)
    if hu.ndim != 3:
        squeeze_to_3d(hu, source=source)  # raises with the shape in words
    check_shape(hu.shape, source, min_axis_voxels)
    check_spacing(vol.spacing_mm, source, spacing_limits)
    if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
        raise VolumeError(f"voxel type {hu.dtype} is not a real number type", source)
    _check_finite(hu, source)
    _check_hounsfield(hu, source)


def check_shape(
    shape: tuple[int, ...], source: str, min_axis_voxels: int = MIN_AXIS_VOXELS, stored_itemsize: int = 2
) -> None:
    """Refuse a 3D shape outside the axis limits or the memory budget. Readers call it with the
    shape (and stored voxel size in bytes) a header promises, before any voxel is read."""
    shape = tuple(int(n) for n in shape)
    small = [n for n in shape if n < min_axis_voxels]
    if small:
        raise VolumeError(
            f"shape {tuple(shape)} has an axis with fewer than {min_axis_voxels} voxels: not a CT volume "
            "(a single slice? pass the folder holding the whole DICOM series)",
            source,
        )
    if any(n > MAX_AXIS_VOXELS for n in shape):
        raise VolumeError(f"shape {tuple(shape)} has an axis longer than {MAX_AXIS_VOXELS} voxels", source)
    needed = math.prod(shape) * (4 + int(stored_itemsize))
    if needed > MAX_VOLUME_BYTES:
        raise VolumeError(
            f"shape {tuple(shape)} would take {needed / 2**30:.1f} GiB to read, over the memory budget of "
            f"{MAX_VOLUME_BYTES / 2**30:g} GiB",
            source,
        )


def check_spacing(spacing, source: str, limits: SpacingLimits = CT_PRACTICE) -> None:
    """Voxel spacing must be positive and within `limits` (CT practice unless told otherwise)."""
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) for s in spacing):
        raise VolumeError(f"voxel spacing {spacing} mm is not three finite numbers", source)
    if not all(s > 0 for s in spacing):
        raise VolumeError(f"voxel spacing {spacing} mm has a negative or zero voxel size", source)
    finest = sorted(spacing)
    if finest[1] > limits.in_plane_mm:
        raise VolumeError(
            f"voxel spacing {spacing} mm: in-plane spacing over {limits.in_plane_mm:g} mm is implausible for "
            f"{limits.why}",
            source,
        )
    if finest[2] > limits.slice_mm:
        raise VolumeError(
            f"voxel spacing {spacing} mm: slices {finest[2]:g} mm apart, over the {limits.slice_mm:g} mm of "
            f"{limits.why}",
            source,
        )


def _check_finite(hu: np.ndarray, source: str) -> None:
    # One float64 sum is finite iff every voxel is: a single pass, no boolean temporary.
    if np.issubdtype(hu.dtype, np.floating) and not math.isfinite(float(np.sum(hu, dtype=np.float64))):
        n_bad = int(hu.size - np.count_nonzero(np.isfinite(hu)))
        raise VolumeError(f"{n_bad} voxels are NaN or infinite", source)


def _sample(hu: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil((hu.size / _SAMPLE_VOXELS) ** (1 / 3)))
    return np.asarray(hu[::step, ::step, ::step], dtype=np.float32).ravel()


def _check_hounsfield(hu: np.ndarray, source: str) -> None:
    lo, hi = float(hu.min()), float(hu.max())
    sample = _sample(hu)
    s_min = float(sample.min())
    at_min = sample == s_min
    if s_min <= -1024.0 and at_min.mean() > 0.02:
        sample = sample[~at_min]  # a constant padding value outside the field of view
    if sample.size == 0:
        raise VolumeError("every voxel has the same value: not a CT", source)
    below = float(np.mean(sample < LOWEST_PLAUSIBLE_HU))
    if below > MAX_FRACTION_BELOW:
        raise VolumeError(
            f"{below:.0%} of voxels lie below {LOWEST_PLAUSIBLE_HU:g} HU (min {lo:g}): looks like a double rescale "
            "(values already in HU rescaled again, e.g. by a metadata CSV's RescaleIntercept)",
            source,
        )
    if hi < MIN_MAX_HU:
        raise VolumeError(
            f"values span [{lo:g}, {hi:g}]: no voxel reaches {MIN_MAX_HU:g} HU (soft tissue, bone), so this is "
            "not a CT in Hounsfield units (already normalised?)",
            source,
        )
    air = float(np.mean(sample <= AIR_HU + 100.0))
    if air >= MIN_AIR_FRACTION:
        return
    if lo >= -50.0 and _looks_like_raw_ct(sample):
        raise VolumeError(
            f"no air near {AIR_HU:g} HU (values span [{lo:g}, {hi:g}], soft tissue near +1024): values look like "
            "raw stored values: is a metadata CSV / rescale missing?",
            source,
        )
    if _body_looks_like_ct(hu, sample):
        return
    if lo >= -50.0:
        raise VolumeError(
            f"values span [{lo:g}, {hi:g}] with no air near {AIR_HU:g} HU and no tissue at CT values: "
            "intensities look like MR, not CT",
            source,
        )
    raise VolumeError(
        f"no air near {AIR_HU:g} HU and no soft tissue and bone at CT values (values span [{lo:g}, {hi:g}]): "
        "not a plausible CT in Hounsfield units",
        source,
    )


def _body_looks_like_ct(hu: np.ndarray, sample: np.ndarray) -> bool:
    """CT judged by the body's own values, for volumes whose air was stored as a constant such as
    0 HU (no air left to find): most of the body at soft-tissue values (-100 to 100 HU: fat edge,
    water, muscle, brain), cortical bone present (700 HU and more) but a minority, and little in the
    gap between them (100 to 300 HU: partial volume and contrast only). MR intensities spread over
    their own scale and do not show this pattern."""
    background = fill_value(hu)
    body = sample if background is None else sample[sample != background]
    if body.size < 100:
        return False
    soft = float(np.mean((body >= -100) & (body <= 100)))
    gap = float(np.mean((body > 100) & (body < 300)))
    bone = float(np.mean(body >= 300))
    dense = float(np.mean(body >= 700))
    return soft >= 0.5 and 0.002 <= bone <= 0.4 and dense > 0.0005 and gap <= 0.15


def _looks_like_raw_ct(sample: np.ndarray) -> bool:
    """Raw CT stored values (HU + 1024) put soft tissue near 1024 and bone well above it."""
    soft = float(np.mean((sample > 900) & (sample < 1200)))
    return soft > 0.05 and float(sample.max()) > 1300
