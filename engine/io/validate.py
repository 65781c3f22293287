"""Plausibility checks every reader runs before a volume leaves engine.io.

They catch the silent failures that would otherwise reach the encoder: wrong dimensionality,
NaNs, nonsense spacing, MR or normalised images, and the two CT-RATE traps (a NIfTI already in
HU rescaled again by the metadata CSV, or raw stored values whose rescale was forgotten).
"""

from __future__ import annotations

import math

import numpy as np

from engine.errors import VolumeError
from engine.volume import Volume

MIN_AXIS_VOXELS = 8
MAX_AXIS_VOXELS = 2048
MAX_VOXELS = 1_500_000_000

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


def check_volume(vol: Volume, *, source: str | None = None, min_axis_voxels: int = MIN_AXIS_VOXELS) -> None:
    """Raise VolumeError naming `source` if `vol` is not a plausible CT in Hounsfield units."""
    source = source or vol.source
    hu = np.asarray(vol.hu)
    if hu.ndim != 3:
        squeeze_to_3d(hu, source=source)  # raises with the shape in words
    _check_shape(hu.shape, source, min_axis_voxels)
    _check_spacing(vol.spacing_mm, source)
    if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
        raise VolumeError(f"voxel type {hu.dtype} is not a real number type", source)
    _check_finite(hu, source)
    _check_hounsfield(hu, source)


def _check_shape(shape: tuple[int, ...], source: str, min_axis_voxels: int) -> None:
    small = [n for n in shape if n < min_axis_voxels]
    if small:
        raise VolumeError(
            f"shape {tuple(shape)} has an axis with fewer than {min_axis_voxels} voxels: not a CT volume "
            "(a single slice? pass the folder holding the whole DICOM series)",
            source,
        )
    if any(n > MAX_AXIS_VOXELS for n in shape):
        raise VolumeError(f"shape {tuple(shape)} has an axis longer than {MAX_AXIS_VOXELS} voxels", source)
    if math.prod(shape) > MAX_VOXELS:
        raise VolumeError(f"shape {tuple(shape)} holds more than {MAX_VOXELS:.1e} voxels", source)


def _check_spacing(spacing: tuple[float, ...], source: str) -> None:
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise VolumeError(f"voxel spacing {tuple(spacing)} mm is not three positive finite numbers", source)
    if any(s > 50 for s in spacing):
        raise VolumeError(f"voxel spacing {tuple(spacing)} mm is implausible for a CT (over 50 mm)", source)


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
    if air < MIN_AIR_FRACTION:
        if lo >= -50.0 and _looks_like_raw_ct(sample):
            raise VolumeError(
                f"no air near {AIR_HU:g} HU (values span [{lo:g}, {hi:g}], soft tissue near +1024): values look like "
                "raw stored values: is a metadata CSV / rescale missing?",
                source,
            )
        if lo >= -50.0:
            raise VolumeError(
                f"values span [{lo:g}, {hi:g}] with no air near {AIR_HU:g} HU: intensities look like MR, not CT",
                source,
            )
        raise VolumeError(
            f"no air near {AIR_HU:g} HU (values span [{lo:g}, {hi:g}]): not a plausible chest CT in Hounsfield units",
            source,
        )


def _looks_like_raw_ct(sample: np.ndarray) -> bool:
    """Raw CT stored values (HU + 1024) put soft tissue near 1024 and bone well above it."""
    soft = float(np.mean((sample > 900) & (sample < 1200)))
    return soft > 0.05 and float(sample.max()) > 1300
