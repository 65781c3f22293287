"""NIfTI (.nii / .nii.gz) → Volume in Hounsfield units."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from nibabel.openers import ImageOpener

from engine.errors import VolumeError
from engine.io.validate import CT_PRACTICE, SpacingLimits, check_shape, check_spacing, check_volume, squeeze_to_3d
from engine.volume import CANONICAL_AXCODES, Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")

# What a broken or truncated file raises from inside nibabel, gzip or zlib.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def reorient_to_canonical(
    array: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, tuple[float, float, float], tuple[str, str, str]]:
    """Permute/flip voxel axes so they run along CANONICAL_AXCODES; returns (array, spacing, original axcodes).

    `affine` maps voxels to RAS+ world millimetres (nibabel's convention); `spacing` follows the
    stored voxel axes and is permuted with them.
    """
    current = nio.io_orientation(affine)
    original = tuple(nio.ornt2axcodes(current))
    transform = nio.ornt_transform(current, nio.axcodes2ornt(CANONICAL_AXCODES))
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return array, spacing, original  # already canonical: no copy
    out = np.ascontiguousarray(nio.apply_orientation(array, transform))
    new_spacing = [0.0, 0.0, 0.0]
    for axis, (new_axis, _flip) in enumerate(transform):
        new_spacing[int(new_axis)] = float(spacing[axis])
    return out, tuple(new_spacing), original  # type: ignore[return-value]


def _raw_header(path: Path, source: str) -> nib.Nifti1Header | nib.Nifti2Header:
    """The header as stored, read alone (nibabel's loader would quietly turn negative pixdims
    positive). Only the first 540 bytes are read, decompressed if need be."""
    try:
        with ImageOpener(str(path)) as f:
            raw = f.read(nib.Nifti2Header.template_dtype.itemsize)
    except _READ_ERRORS as err:
        raise VolumeError(f"cannot read NIfTI (corrupt or truncated file?): {err}", source) from None
    if len(raw) < 4:
        raise VolumeError("cannot read NIfTI: the file is shorter than a header", source)
    sizes = {struct.unpack("<i", raw[:4])[0], struct.unpack(">i", raw[:4])[0]}
    klass = nib.Nifti1Header if 348 in sizes else nib.Nifti2Header if 540 in sizes else None
    if klass is None or len(raw) < klass.template_dtype.itemsize:
        raise VolumeError("cannot read NIfTI: no NIfTI header (the first 4 bytes are not 348 or 540)", source)
    try:
        return klass(raw[: klass.template_dtype.itemsize], check=False)
    except _READ_ERRORS as err:
        raise VolumeError(f"cannot read NIfTI header: {err}", source) from None


def check_header(path: Path, source: str, pixdim_limits: SpacingLimits | None = CT_PRACTICE) -> tuple[int, ...]:
    """Dimensions and voxel type from the header alone, against the memory budget, and its voxel
    sizes against `pixdim_limits` (None: spacing comes from elsewhere, or is not checked), before
    any voxel is read; returns the stored shape."""
    header = _raw_header(path, source)
    try:
        shape = tuple(int(n) for n in header.get_data_shape())
        dtype = header.get_data_dtype()
    except (ValueError, KeyError, nib.spatialimages.HeaderDataError) as err:
        raise VolumeError(f"NIfTI header is malformed: {err}", source) from None
    if dtype.fields is not None or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise VolumeError(f"voxel type {dtype} (RGB or complex) is not one real number per voxel: not a CT", source)
    if any(n <= 0 for n in shape):
        raise VolumeError(f"NIfTI header gives an empty shape {shape}", source)
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        extra = " (a time series or multi-channel image?)" if len(shape) > 3 else ""
        raise VolumeError(f"expected a 3D volume, got a {len(shape)}D array of shape {shape}{extra}", source)
    check_shape(shape[:3], source, min_axis_voxels=1, stored_itemsize=dtype.itemsize)
    if pixdim_limits is not None:
        pixdim = tuple(float(v) for v in header["pixdim"][1:4])
        if any(v < 0 for v in pixdim):
            raise VolumeError(f"header voxel sizes (pixdim) {pixdim} mm include a negative size: corrupt header",
                              source)
        if all(v > 0 for v in pixdim):
            check_spacing(pixdim, source, pixdim_limits)  # zero sizes are named later, against the affine
    if not str(path).lower().endswith(".gz"):
        expected = int(header.get_data_offset()) + int(np.prod(shape)) * dtype.itemsize
        actual = path.stat().st_size
        if actual < expected:
            raise VolumeError(f"file holds {actual:,} bytes but its header promises {expected:,}: truncated",
                              source)
    return shape


def _check_zooms_match_affine(zooms, affine, source: str) -> None:
    """nibabel silently turns a zero pixdim into 1 mm; the affine's voxel sizes reveal it."""
    if affine is None:
        return
    from_affine = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(from_affine, zooms, rtol=1e-3, atol=1e-4):
        raise VolumeError(
            f"header voxel sizes {tuple(round(z, 4) for z in zooms)} mm disagree with the affine's "
            f"{tuple(round(float(v), 4) for v in from_affine)} mm: corrupt header (zero or missing spacing?)",
            source,
        )


def read_nifti(
    path: str | Path,
    *,
    rescale: tuple[float, float] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    reorient: bool = True,
    check: bool = True,
    spacing_limits: SpacingLimits = CT_PRACTICE,
) -> Volume:
    """Read a NIfTI CT.

    The header's scl_slope/scl_inter are applied by nibabel; `rescale=(slope, intercept)` is applied
    on top (CT-RATE's metadata CSV, for files that store raw values). Spacing comes from the header
    zooms unless `spacing_mm` (in stored voxel-axis order) is given. With `reorient=True` the voxels
    are brought to CANONICAL_AXCODES using the header affine; with `reorient=False` the stored
    order is trusted to be canonical already (CT-RATE: CT-CLIP used its files as stored).
    `check=True` runs check_volume (plausible CT in HU, spacing within `spacing_limits`). The header
    is checked (dimensions and voxel type against the memory budget, voxel sizes) before any voxel
    is read, whatever `check` says.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise VolumeError("no such file", source)
    check_header(path, source, spacing_limits if check and spacing_mm is None else None)
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", source)
        hu = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        affine = img.affine
    except VolumeError:
        raise
    except _READ_ERRORS as err:
        raise VolumeError(f"cannot read NIfTI (corrupt or truncated file?): {err}", source) from None
    hu = squeeze_to_3d(hu, source=source)

    if rescale is not None:
        slope, intercept = (float(v) for v in rescale)
        if slope != 1.0:
            hu *= np.float32(slope)
        if intercept != 0.0:
            hu += np.float32(intercept)
    if spacing_mm is None:
        _check_zooms_match_affine(zooms, affine, source)
    spacing = tuple(float(s) for s in spacing_mm) if spacing_mm is not None else zooms
    if len(spacing) != 3:
        raise VolumeError(f"spacing {spacing} must give three values (x, y, z)", source)

    header_axcodes = tuple(nio.aff2axcodes(affine)) if affine is not None else None
    if reorient:
        if affine is None or not np.all(np.isfinite(affine)):
            raise VolumeError("header has no usable affine, so the voxel orientation is unknown", source)
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise VolumeError("header affine is singular (a zero voxel size?)", source)
        hu, spacing, _ = reorient_to_canonical(hu, affine, spacing)  # type: ignore[arg-type]
    meta = {
        "format": "nifti",
        "header_axcodes": "".join(header_axcodes) if header_axcodes else None,
        "reoriented": bool(reorient),
        "rescale": list(rescale) if rescale is not None else None,
    }
    vol = Volume(hu=hu, spacing_mm=spacing, source=source, axcodes=CANONICAL_AXCODES, meta=meta)
    if check:
        check_volume(vol, source=source, spacing_limits=spacing_limits)
    return vol
