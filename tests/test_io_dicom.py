"""DICOM input: real CT slice HU, series assembly in LPS order, zip, PHI removal, bad series named."""

import random
import shutil
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from conftest import lps_affine, write_nifti
from engine.errors import DicomError, VolumeError
from engine.io import load_volume, read_dicom_series, read_nifti

SPACING = (0.8, 0.7, 2.5)  # x (between columns), y (between rows), z
ORIGIN = (-150.0, -120.0, -300.0)  # LPS mm of voxel (0, 0, 0)
PATIENT = "Doe^Jane"


def _slice(stored: np.ndarray, ipp, iop, series_uid, spacing, *, pixels=True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.PatientName = PATIENT
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "19600101"
    ds.StudyDate = "20240102"
    ds.InstitutionName = "General Hospital"
    ds.AccessionNumber = "ACC123"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.Manufacturer = "ACME"
    ds.KVP = 120
    ds.SliceThickness = spacing[2]
    ds.ConvolutionKernel = "B30f"
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.PixelSpacing = [spacing[1], spacing[0]]  # [between rows, between columns]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    if pixels:
        ds.PixelData = stored.astype(np.uint16).tobytes()
    return ds


def write_series(folder, hu, *, spacing=SPACING, flip_rows=False, series_uid=None, pixels=True, seed=0):
    """Write `hu` (X, Y, Z in LPS order) as a CT series, files in shuffled order.

    flip_rows=True stores it with the IOP row direction towards R (-x), which makes the slice
    normal point inferior: the reader must undo both flips.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    nx, ny, nz = hu.shape
    iop = [-1, 0, 0, 0, 1, 0] if flip_rows else [1, 0, 0, 0, 1, 0]
    order = list(range(nz))
    random.Random(seed).shuffle(order)
    for n, k in enumerate(order):
        plane = hu[::-1, :, k] if flip_rows else hu[:, :, k]
        stored = (plane.T + 1024)  # pixel[row, col]: col along the row direction
        x0 = ORIGIN[0] + (nx - 1) * spacing[0] if flip_rows else ORIGIN[0]
        ipp = [x0, ORIGIN[1], ORIGIN[2] + k * spacing[2]]
        ds = _slice(stored, ipp, iop, series_uid, spacing, pixels=pixels)
        ds.save_as(folder / f"IM{n:04d}", enforce_file_format=True)
    return folder


def test_ct_small_slice_hu_equals_pydicom():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_dicom_series(path, check=False)
    assert vol.shape == (ds.Columns, ds.Rows, 1)
    np.testing.assert_array_equal(vol.hu[:, :, 0], apply_modality_lut(ds.pixel_array, ds).T.astype(np.float32))
    assert vol.spacing_mm[:2] == (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]))
    # checked by default: one slice is not a CT volume
    with pytest.raises(VolumeError, match="fewer than 8 voxels") as err:
        load_volume(path)
    assert path in str(err.value)


def test_folder_with_non_dicom_files(tmp_path):
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "slice.dcm")
    (tmp_path / "README.txt").write_text("not DICOM")
    vol = read_dicom_series(tmp_path, check=False)
    assert vol.shape == (128, 128, 1)


@pytest.mark.parametrize("flip_rows", [False, True], ids=["axial", "flipped-iop"])
def test_series_equals_its_nifti_twin(tmp_path, phantom, flip_rows):
    folder = write_series(tmp_path / "series", phantom, flip_rows=flip_rows)
    twin = read_nifti(write_nifti(tmp_path / "twin.nii.gz", phantom, lps_affine(SPACING)))
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.hu, twin.hu)
    np.testing.assert_allclose(vol.spacing_mm, twin.spacing_mm, rtol=1e-6)
    assert vol.meta["n_slices"] == phantom.shape[2]

    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"nested/{f.name}")
    np.testing.assert_array_equal(load_volume(archive).hu, twin.hu)


def test_metadata_keeps_technical_fields_and_drops_phi(tmp_path, phantom):
    vol = load_volume(write_series(tmp_path / "s", phantom))
    assert vol.meta["Manufacturer"] == "ACME" and vol.meta["KVP"] == 120.0
    assert vol.meta["ConvolutionKernel"] == "B30f" and vol.meta["SliceThickness"] == SPACING[2]
    for tag in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "InstitutionName",
                "AccessionNumber", "ReferringPhysicianName", "SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID"):
        assert tag not in vol.meta
    text = repr(vol.meta)
    for secret in (PATIENT, "MRN-0042", "19600101", "20240102", "General Hospital", "ACC123", "1.2.3.4"):
        assert secret not in text


def test_dicom_without_pixel_data(tmp_path, phantom):
    folder = write_series(tmp_path / "nopix", phantom, pixels=False)
    with pytest.raises(DicomError, match="without pixel data") as err:
        load_volume(folder)
    assert str(folder) in str(err.value)


def test_mixed_series_are_named_and_one_can_be_chosen(tmp_path, phantom):
    folder = tmp_path / "mixed"
    write_series(folder / "a", phantom, series_uid="1.2.826.0.1.1")
    write_series(folder / "b", phantom + 5, series_uid="1.2.826.0.1.2")
    with pytest.raises(DicomError, match="holds 2 series") as err:
        load_volume(folder)
    assert "1.2.826.0.1.1" in str(err.value) and "1.2.826.0.1.2" in str(err.value) and str(folder) in str(err.value)
    vol = load_volume(folder, series_uid="1.2.826.0.1.2")
    np.testing.assert_array_equal(vol.hu, phantom + 5)


def test_missing_slices_make_uneven_gaps(tmp_path, phantom):
    folder = write_series(tmp_path / "gappy", phantom)
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    for f in files[5:8]:
        f.unlink()
    with pytest.raises(DicomError, match="uneven slice gaps") as err:
        load_volume(folder)
    assert str(folder) in str(err.value)


def test_corrupt_zip_and_empty_folder(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(VolumeError, match=r"bad\.zip"):
        load_volume(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DicomError, match="no DICOM image"):
        load_volume(empty)
