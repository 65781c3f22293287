"""CT input: every reader returns a Volume in Hounsfield units, CANONICAL_AXCODES voxel order,
checked for plausibility, with patient-identifying metadata dropped.

Inputs are bounded: a file's content must match its name (checked from its first bytes), a zip's
directory is checked before any member is decompressed (engine.io.archive), and a NIfTI header's
dimensions and voxel type are checked against the memory budget before any voxel is read."""

from __future__ import annotations

from pathlib import Path

from engine.errors import VolumeError
from engine.io import container
from engine.io.dicom import read_dicom_series
from engine.io.itk import ITK_SUFFIXES, is_itk_image, read_itk
from engine.io.nifti import NIFTI_SUFFIXES, is_nifti, read_nifti, reorient_to_canonical
from engine.io.validate import CT_PRACTICE, PHANTOM_GRID, SpacingLimits, check_volume
from engine.volume import Volume

__all__ = [
    "load_volume", "read_nifti", "read_dicom_series", "read_itk", "check_volume", "reorient_to_canonical",
    "is_nifti", "is_itk_image", "ITK_SUFFIXES", "VOLUME_SUFFIXES", "SpacingLimits", "CT_PRACTICE", "PHANTOM_GRID",
]

# Every single-file name load_volume reads (a DICOM series is also a folder): the one list of them.
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, *ITK_SUFFIXES, ".zip", ".dcm")

_NIFTI_KEYS = {"rescale", "spacing_mm", "reorient", "check", "spacing_limits"}
_DICOM_KEYS = {"series_uid", "check", "spacing_limits"}
_ITK_KEYS = {"reorient", "check"}


def _reader(path: Path):
    """The reader for `path`, or VolumeError saying in plain words what the file is instead."""
    if path.is_dir():
        return read_dicom_series, _DICOM_KEYS
    kind = container.content_kind(path)
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        if kind != container.GZIP_NIFTI:
            raise VolumeError(f"cannot read NIfTI: this is {kind} named .nii.gz", path)
        return read_nifti, _NIFTI_KEYS
    if name.endswith(".nii"):
        if kind != container.NIFTI:
            raise VolumeError(f"cannot read NIfTI: this is {kind} named .nii", path)
        return read_nifti, _NIFTI_KEYS
    if is_itk_image(path):
        return read_itk, _ITK_KEYS
    if name.endswith(".zip"):
        if kind != container.ZIP:
            hint = " (pack the series with zip)" if kind in (container.TAR, container.GZIP) else ""
            raise VolumeError(f"not a zip archive: this is {kind} named .zip{hint}", path)
        return read_dicom_series, _DICOM_KEYS
    if name.endswith(".dcm"):
        if kind in (container.NIFTI, container.GZIP_NIFTI):
            suffix = ".nii" if kind == container.NIFTI else ".nii.gz"
            raise VolumeError(f"this is {kind} named .dcm, not DICOM: rename it {suffix}", path)
        if kind != container.DICOM:
            what = "no 'DICM' marker at byte 128" if kind == container.UNKNOWN else f"this is {kind}"
            raise VolumeError(f"not a DICOM file ({what}) named .dcm", path)
        return read_dicom_series, _DICOM_KEYS
    if kind in (container.ZIP, container.DICOM):
        return read_dicom_series, _DICOM_KEYS
    raise VolumeError("unknown format: expected .nii/.nii.gz, .mha/.mhd, .nrrd/.nhdr, a DICOM folder, "
                      "a .zip of one, or a .dcm file", path)


def load_volume(path: str | Path, **kw) -> Volume:
    """Read a CT from a NIfTI file (.nii/.nii.gz), a MetaImage or NRRD file (ITK_SUFFIXES), a DICOM
    series folder or .zip, or a single DICOM file.

    Keyword arguments go to the reader: read_nifti(rescale, spacing_mm, reorient, check,
    spacing_limits), read_itk(reorient, check) or read_dicom_series(series_uid, check, spacing_limits).
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError("no such file or folder", path)
    reader, allowed = _reader(path)
    unknown = set(kw) - allowed
    if unknown:
        raise VolumeError(f"options {sorted(unknown)} do not apply to this kind of input", path)
    return reader(path, **kw)
