"""CT input: every reader returns a Volume in Hounsfield units, CANONICAL_AXCODES voxel order,
checked for plausibility, with patient-identifying metadata dropped."""

from __future__ import annotations

import zipfile
from pathlib import Path

from engine.errors import VolumeError
from engine.io.dicom import read_dicom_series
from engine.io.itk import ITK_SUFFIXES, is_itk_image, read_itk
from engine.io.nifti import is_nifti, read_nifti, reorient_to_canonical
from engine.io.validate import check_volume
from engine.volume import Volume

__all__ = ["load_volume", "read_nifti", "read_dicom_series", "read_itk", "check_volume", "reorient_to_canonical",
           "is_nifti", "is_itk_image", "ITK_SUFFIXES"]

_NIFTI_KEYS = {"rescale", "spacing_mm", "reorient", "check"}
_DICOM_KEYS = {"series_uid", "check"}
_ITK_KEYS = {"reorient", "check"}


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def load_volume(path: str | Path, **kw) -> Volume:
    """Read a CT from a NIfTI file (.nii/.nii.gz), a MetaImage or NRRD file (ITK_SUFFIXES), a DICOM
    series folder or .zip, or a single DICOM file.

    Keyword arguments go to the reader: read_nifti(rescale, spacing_mm, reorient, check),
    read_itk(reorient, check) or read_dicom_series(series_uid, check).
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError("no such file or folder", path)
    if is_nifti(path):
        reader, allowed = read_nifti, _NIFTI_KEYS
    elif is_itk_image(path):
        reader, allowed = read_itk, _ITK_KEYS
    elif path.is_dir() or path.suffix.lower() in (".zip", ".dcm") or zipfile.is_zipfile(path) or _is_dicom_file(path):
        reader, allowed = read_dicom_series, _DICOM_KEYS
    else:
        raise VolumeError("unknown format: expected .nii/.nii.gz, .mha/.mhd, .nrrd/.nhdr, a DICOM folder, "
                          "a .zip of one, or a .dcm file", path)
    unknown = set(kw) - allowed
    if unknown:
        raise VolumeError(f"options {sorted(unknown)} do not apply to this kind of input", path)
    return reader(path, **kw)
