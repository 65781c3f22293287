"""DICOM series (a folder, a .zip of one, or a single file) → Volume in Hounsfield units."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from engine.errors import DicomError
from engine.io.archive import checked_members
from engine.io.nifti import reorient_to_canonical
from engine.io.validate import CT_PRACTICE, SpacingLimits, check_shape, check_spacing, check_volume
from engine.volume import CANONICAL_AXCODES, Volume

# Technical tags kept in Volume.meta. An allow-list on purpose: anything not named here (names,
# IDs, dates, institutions, physicians, UIDs, free-text descriptions) is dropped.
KEPT_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "Exposure",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "ConvolutionKernel",
    "FilterType",
    "ReconstructionDiameter",
    "BodyPartExamined",
    "PatientPosition",
    "ImageType",
    "RescaleType",
    "ContrastBolusAgent",
    "Rows",
    "Columns",
    "BitsStored",
)

# Neighbouring slice gaps may differ by this fraction of the median gap before the series is refused.
MAX_GAP_DEVIATION = 0.2


@dataclass
class _Slice:
    name: str
    ds: pydicom.Dataset  # the header only: pixel data is read slice by slice into the volume
    open: Callable[[], IO[bytes]]


def _is_zip(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))


@contextmanager
def _members(path: Path) -> Iterator[list[tuple[str, Callable[[], IO[bytes]]]]]:
    """(name, opener) of every candidate file: under a folder, in a zip (checked by
    engine.io.archive before anything is decompressed; streams read lazily), or the file itself."""
    if path.is_dir():
        files = [Path(root, f) for root, _dirs, names in os.walk(path) for f in sorted(names)]
        yield [(str(f), partial(open, f, "rb")) for f in files]
    elif _is_zip(path):
        members = checked_members(path)
        try:
            with zipfile.ZipFile(path) as zf:
                yield [(f"{path}:{m.filename}", partial(zf.open, m)) for m in members]
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # a CRC or stream error while reading
            raise DicomError(f"cannot read zip archive: {err}", str(path)) from None
    else:
        yield [(str(path), partial(open, path, "rb"))]


def _pixel_data_follows(stream: IO[bytes]) -> bool:
    """After a stop_before_pixels read pydicom leaves the stream at the pixel data element; peek
    at its tag so that headers alone tell images from image-like files without pixels."""
    tag = stream.read(4)
    if len(tag) < 4:
        return False
    little = struct.unpack("<HH", tag)
    big = struct.unpack(">HH", tag)
    return little in _PIXEL_TAGS or big in _PIXEL_TAGS


_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian


def _read_headers(path: Path, members) -> tuple[list[_Slice], list[tuple[str, str]]]:
    """Image slices (headers of files with pixel data), and (name, series UID) of image-like files
    lacking pixel data. No pixel data is read."""
    slices, no_pixels = [], []
    single_file = path.is_file() and not _is_zip(path)
    for name, opener in members:
        try:
            with opener() as stream:
                ds = pydicom.dcmread(stream, stop_before_pixels=True)
                # a deflated dataset is parsed from an inflated copy: the stream position says nothing
                deflated = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == _DEFLATED
                has_pixels = deflated or _pixel_data_follows(stream)
        except (InvalidDicomError, EOFError) as err:
            if single_file:
                raise DicomError(f"not a readable DICOM file: {_plain(err)}", name) from None
            continue  # not DICOM (README, DICOMDIR index, thumbnails): skip
        except (zipfile.BadZipFile, zlib.error) as err:
            raise DicomError(f"cannot read zip member: {err}", name) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as err:
            raise DicomError(f"corrupt DICOM file: {err}", name) from None
        if getattr(ds, "SOPClassUID", None) == "1.2.840.10008.1.3.10":  # DICOMDIR media directory
            continue
        if not has_pixels:
            if "ImagePositionPatient" in ds or "Rows" in ds:
                no_pixels.append((name, str(getattr(ds, "SeriesInstanceUID", ""))))
            continue  # structured reports, presentation states: not images
        slices.append(_Slice(name, ds, opener))
    return slices, no_pixels


def _plain(err: Exception) -> str:
    """pydicom's advice to read with force=True is not advice for a user: say what the file lacks."""
    text = str(err)
    if "force=True" in text or "File Meta Information" in text or "preamble" in text:
        return "no DICOM header (the 'DICM' marker at byte 128 is missing)"
    return text


def _series_label(ds: pydicom.Dataset, n: int) -> str:
    number = getattr(ds, "SeriesNumber", "?")
    return f"{getattr(ds, 'SeriesInstanceUID', '<no UID>')} (series {number}, {n} slices)"


def _select_series(slices: list[_Slice], series_uid: str | None, source: str) -> list[_Slice]:
    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(str(getattr(s.ds, "SeriesInstanceUID", "")), []).append(s)
    if series_uid is not None:
        if series_uid not in groups:
            known = "; ".join(_series_label(g[0].ds, len(g)) for g in groups.values())
            raise DicomError(f"no series with SeriesInstanceUID {series_uid}; found: {known}", source)
        return groups[series_uid]
    if len(groups) > 1:
        listed = "; ".join(_series_label(g[0].ds, len(g)) for g in groups.values())
        raise DicomError(f"holds {len(groups)} series, choose one by its SeriesInstanceUID: {listed}", source)
    return next(iter(groups.values()))


def _geometry(ds: pydicom.Dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        raise DicomError("slice lacks ImageOrientationPatient/ImagePositionPatient", name) from None
    if iop.shape != (6,) or ipp.shape != (3,):
        raise DicomError("malformed ImageOrientationPatient/ImagePositionPatient", name)
    return iop, ipp


def _pixel_spacing(ds: pydicom.Dataset, name: str) -> tuple[float, float]:
    """(spacing between columns, spacing between rows) = (along IOP row direction, along IOP column direction)."""
    try:
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        raise DicomError("slice lacks PixelSpacing", name) from None
    if not (row_spacing > 0 and col_spacing > 0):
        raise DicomError(f"PixelSpacing {[row_spacing, col_spacing]} mm has a negative or zero voxel size", name)
    return col_spacing, row_spacing


def _hu_slice(s: _Slice) -> np.ndarray:
    """One slice in HU, read now (the header was read before): only this slice's pixels in memory."""
    try:
        with s.open() as stream:
            ds = pydicom.dcmread(stream)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise DicomError(f"cannot read the slice's pixel data: {err}", s.name) from None
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for unsupported/garbled encodings
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise DicomError(
            f"cannot decode pixel data (transfer syntax {syntax}; compressed data may need pylibjpeg or gdcm): {err}",
            s.name,
        ) from None
    if pixels.ndim != 2:
        raise DicomError(f"pixel data of shape {pixels.shape} is not one greyscale slice", s.name)
    return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)


def _kept_meta(ds: pydicom.Dataset) -> dict:
    meta: dict = {}
    for tag in KEPT_TAGS:
        if tag in ds:
            value = ds.data_element(tag).value
            if isinstance(value, pydicom.multival.MultiValue):
                value = [v if isinstance(v, (int, float)) else str(v) for v in value]
            elif isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.IS)):
                value = float(value) if isinstance(value, pydicom.valuerep.DSfloat) else int(value)
            elif not isinstance(value, (int, float)):
                value = str(value)
            meta[tag] = value
    return meta


def read_dicom_series(
    path: str | Path, *, series_uid: str | None = None, check: bool = True, spacing_limits: SpacingLimits = CT_PRACTICE
) -> Volume:
    """Assemble one DICOM CT series into a Volume in CANONICAL_AXCODES (LPS) voxel order.

    Slices are ordered by their position along the slice normal (cross product of the
    ImageOrientationPatient row and column directions), converted to HU with the modality LUT
    (RescaleSlope/Intercept), and the z spacing is measured from the positions. A single file is
    read as a one-slice series (which check_volume then refuses as too thin unless check=False).
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DicomError("no such file or folder", source)
    with _members(path) as members:
        return _assemble(path, members, series_uid, check, spacing_limits)


def _assemble(path: Path, members, series_uid: str | None, check: bool, limits: SpacingLimits) -> Volume:
    source = str(path)
    slices, no_pixels = _read_headers(path, members)
    if not slices:
        if no_pixels:
            raise DicomError(f"DICOM without pixel data ({len(no_pixels)} files, e.g. {no_pixels[0][0]})", source)
        raise DicomError("holds no DICOM image files", source)
    slices = _select_series(slices, series_uid, source)
    chosen = str(getattr(slices[0].ds, "SeriesInstanceUID", ""))
    missing = [name for name, uid in no_pixels if uid == chosen]
    if missing:
        raise DicomError(f"DICOM without pixel data in the series: {', '.join(missing[:3])}", source)

    first = slices[0].ds
    iop, _ = _geometry(first, slices[0].name)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DicomError(f"ImageOrientationPatient {list(iop)} is not two orthogonal unit vectors", slices[0].name)
    shape = (int(first.Rows), int(first.Columns))
    dx, dy = _pixel_spacing(first, slices[0].name)
    # Before any pixel is read: the volume these headers promise must fit the memory budget.
    check_shape((shape[1], shape[0], len(slices)), source, min_axis_voxels=1)
    positions = []
    for s in slices:
        s_iop, s_ipp = _geometry(s.ds, s.name)
        if not np.allclose(s_iop, iop, atol=1e-3):
            raise DicomError(f"slice orientation {list(s_iop)} differs from the series' {list(iop)}", s.name)
        if (int(s.ds.Rows), int(s.ds.Columns)) != shape:
            size = (int(s.ds.Rows), int(s.ds.Columns))
            raise DicomError(f"slice size {size} differs from the series' {shape}", s.name)
        positions.append(float(np.dot(normal, s_ipp)))
    order = np.argsort(positions, kind="stable")
    slices = [slices[i] for i in order]
    positions = np.asarray(positions)[order]
    series = _series_label(first, len(slices))

    if len(slices) > 1:
        gaps = np.diff(positions)
        if np.any(gaps < 1e-3):
            i = int(np.argmin(gaps))
            raise DicomError(
                f"series {series} has two slices at the same position ({slices[i].name}, {slices[i + 1].name}): "
                "several acquisitions or duplicated files?",
                source,
            )
        median = float(np.median(gaps))
        if np.max(np.abs(gaps - median)) > MAX_GAP_DEVIATION * median:
            raise DicomError(
                f"series {series} has uneven slice gaps ({gaps.min():.3g} to {gaps.max():.3g} mm, "
                f"median {median:.3g}): "
                "missing slices?",
                source,
            )
        dz = float((positions[-1] - positions[0]) / (len(slices) - 1))
    else:
        dz = float(getattr(first, "SpacingBetweenSlices", None) or getattr(first, "SliceThickness", None) or 1.0)
    if check:
        check_spacing((dx, dy, dz), source, limits)  # before the pixels: 50 mm slices are refused from headers

    # pixel_array is [row, col]; voxel (i, j, k) = (col, row, slice) so that i runs along the IOP
    # row direction, j along the IOP column direction and k along the normal.
    hu = np.empty((shape[1], shape[0], len(slices)), dtype=np.float32)
    for k, s in enumerate(slices):
        hu[:, :, k] = _hu_slice(s).T
    _, origin = _geometry(slices[0].ds, slices[0].name)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * dx
    affine_lps[:3, 1] = col_dir * dy
    affine_lps[:3, 2] = normal * dz
    affine_lps[:3, 3] = origin
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # nibabel's world is RAS+
    hu, spacing, original = reorient_to_canonical(hu, affine_ras, (dx, dy, dz))

    meta = _kept_meta(first)
    meta.update({"format": "dicom", "n_slices": len(slices), "stored_axcodes": "".join(original)})
    vol = Volume(hu=hu, spacing_mm=spacing, source=source, axcodes=CANONICAL_AXCODES, meta=meta)
    if check:
        check_volume(vol, source=source, spacing_limits=limits)
    return vol
