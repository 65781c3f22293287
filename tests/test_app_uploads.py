"""Uploads and client-sent names: files land only in the upload area under server-chosen names,
refusals say why, readable uploads become volumes, and no name escapes the app's folders."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from conftest import chest_phantom, lps_affine, write_nifti
from engine.errors import VolumeError
from test_io_dicom import PATIENT, write_series
from ui.paths import child_path, safe_file_name
from ui.uploads import UPLOAD_PREFIX, UploadArea, display_name


@pytest.mark.parametrize("client_name, expected", [
    ("scan.nii.gz", "scan.nii.gz"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\evil.zip", "evil.zip"),
    ("/abs/path/ct 1 (copy).nii", "ct_1_copy_.nii"),
    ("..", "upload"),
    (".hidden.nii", "hidden.nii"),
    ("", "upload"),
])
def test_client_names_are_reduced_to_a_plain_file_name(client_name, expected):
    assert safe_file_name(client_name) == expected


def test_child_path_refuses_escapes(tmp_path):
    root = tmp_path / "uploads"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("x")
    assert child_path(root, "a.nii") == (root / "a.nii").resolve()
    for name in ("../secret.txt", "/etc/passwd", "a/../../secret.txt", ".", ""):
        with pytest.raises(VolumeError, match="outside"):
            child_path(root, name)
    (root / "link").symlink_to(tmp_path / "secret.txt")  # a link out of the area is an escape too
    with pytest.raises(VolumeError, match="outside"):
        child_path(root, "link")


def test_upload_is_stored_inside_the_area_and_read(tmp_path):
    area = UploadArea(tmp_path / "uploads", max_bytes=10 * 2**20)
    src = write_nifti(tmp_path / "in.nii.gz", chest_phantom().astype(np.int16), lps_affine((1.0, 1.2, 2.5)))
    key = area.store(src, "../../outside/../my scan.nii.gz")
    assert key.startswith(UPLOAD_PREFIX) and key.endswith("-my_scan.nii.gz")
    stored = list((tmp_path / "uploads").iterdir())
    assert len(stored) == 1 and stored[0].name == key[len(UPLOAD_PREFIX):]
    assert not (tmp_path / "outside").exists()
    volume = area.load(key)
    np.testing.assert_array_equal(volume.hu, chest_phantom())
    assert volume.spacing_mm == pytest.approx((1.0, 1.2, 2.5))
    assert volume.source == display_name(key) == "my_scan.nii.gz (uploaded)"


@pytest.mark.parametrize("key", [UPLOAD_PREFIX + "../secret.txt", UPLOAD_PREFIX + "/etc/passwd",
                                 UPLOAD_PREFIX + "..", "../secret.txt", UPLOAD_PREFIX + "never-given.nii"])
def test_case_keys_from_the_client_cannot_reach_other_files(tmp_path, key):
    (tmp_path / "secret.txt").write_text("x")
    area = UploadArea(tmp_path / "uploads")
    with pytest.raises(VolumeError):
        area.path(key)


def test_refusals_say_why(tmp_path):
    area = UploadArea(tmp_path / "uploads", max_bytes=2**20)
    with pytest.raises(VolumeError, match=r"report.pdf is not a NIfTI file .* zipped DICOM"):
        area.check("report.pdf", 10)
    with pytest.raises(VolumeError, match=r"big.nii.gz is 3.0 MiB, over the limit of 1 MiB"):
        area.check("big.nii.gz", 3 * 2**20)
    with pytest.raises(VolumeError, match="empty"):
        area.check("zero.nii", 0)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti" * 50)
    key = area.store(bad, "bad.nii.gz")
    with pytest.raises(VolumeError) as err:
        area.load(key)
    assert "bad.nii.gz (uploaded)" in str(err.value) and str(area.root) not in str(err.value)


def test_zipped_dicom_upload_reads_without_patient_fields(tmp_path):
    hu = chest_phantom((24, 20, 8))
    folder = write_series(tmp_path / "series", hu)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"series/{f.name}")
    area = UploadArea(tmp_path / "uploads")
    volume = area.load(area.store(archive, "series.zip"))
    np.testing.assert_allclose(volume.hu, hu)
    assert PATIENT not in repr(volume.meta) and "MRN-0042" not in repr(volume.meta)
