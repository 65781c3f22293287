"""Bounded input: zip bombs, escaping or linked zip members and absurd NIfTI headers are refused from
the archive's directory or the header alone, before any payload is read, in one line naming the
file and the problem; a series that passes is read slice by slice."""

from __future__ import annotations

import stat
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import chest_phantom
from engine.errors import VolumeError
from engine.io import load_volume
from hostile_inputs import absurd_nifti, linked, many_members, stored, write_zip, zeros_bomb
from test_io_dicom import write_series


@pytest.fixture
def no_payload_read(monkeypatch):
    """Fails the test if any zip member is opened, any DICOM parsed, or any NIfTI loaded or its
    voxels read."""
    calls = []

    def spy(what):
        def refuse(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} was called: the payload was read")
        return refuse

    monkeypatch.setattr(zipfile.ZipFile, "open", spy("ZipFile.open"))
    monkeypatch.setattr(zipfile.ZipFile, "read", spy("ZipFile.read"))
    monkeypatch.setattr(pydicom, "dcmread", spy("pydicom.dcmread"))
    monkeypatch.setattr(nib, "load", spy("nibabel.load"))
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", spy("ArrayProxy.__array__"))
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "_get_scaled", spy("ArrayProxy._get_scaled"))
    return calls


def _refused(path, *patterns) -> str:
    with pytest.raises(VolumeError) as err:
        load_volume(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    for pattern in patterns:
        assert pattern in text, text
    return text


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bombs")
    return {"zeros": zeros_bomb(root / "zeros.zip"), "many": many_members(root / "many.zip")}


def test_zip_of_a_gibibyte_of_zeros_is_refused_from_its_directory(bombs, no_payload_read):
    assert bombs["zeros"].stat().st_size < 1.1e6  # ~1 MB holding 1 GiB
    _refused(bombs["zeros"], "IM0001.dcm", "expands 1,011-fold", "zip bomb")
    assert no_payload_read == []


def test_zip_of_100k_members_is_refused_from_its_end_record(bombs, no_payload_read, monkeypatch):
    # the member count is read from the end record: the 100,000-entry directory is not even parsed
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda *a, **k: pytest.fail("directory parsed"))
    _refused(bombs["many"], "100,000 members", "limit of 20,000")
    assert no_payload_read == []


@pytest.mark.parametrize("member, problem", [
    ("../../x.dcm", "climbs out of the archive"),
    ("series/../../../x.dcm", "climbs out of the archive"),
    ("/abs/x.dcm", "an absolute path"),
    ("C:\\scans\\x.dcm", "an absolute path"),
    ("..\\x.dcm", "climbs out of the archive"),
])
def test_escaping_member_names_are_refused_by_name(tmp_path, member, problem, no_payload_read):
    archive = write_zip(tmp_path / "series.zip", [stored("series/IM0001.dcm", b"x"), stored(member, b"y")])
    _refused(archive, repr(member), problem)
    assert no_payload_read == []


def test_symlink_member_is_refused_by_name(tmp_path, no_payload_read):
    archive = linked(tmp_path / "series.zip", "series/IM0002.dcm")
    _refused(archive, "'series/IM0002.dcm' is a symbolic link")
    assert no_payload_read == []


def test_traversal_is_named_even_beside_a_good_series(tmp_path, phantom):
    """Today's reader called this a 'duplicate slice': the name, not the content, is the problem."""
    folder = write_series(tmp_path / "series", phantom)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"series/{f.name}")
        z.write(sorted(folder.iterdir())[0], "../../x.dcm")
    _refused(archive, "'../../x.dcm'", "climbs out")


def test_absurd_nifti_header_is_refused_before_any_voxel(tmp_path, no_payload_read):
    path = absurd_nifti(tmp_path / "huge.nii")
    assert path.stat().st_size < 2000
    _refused(path, "(2000, 2000, 2000)", "memory budget")
    gz = tmp_path / "huge.nii.gz"
    import gzip

    gz.write_bytes(gzip.compress(path.read_bytes()))
    _refused(gz, "(2000, 2000, 2000)", "memory budget")
    _refused(absurd_nifti(tmp_path / "long.nii", (30000, 8, 8)), "longer than 2048")
    _refused(absurd_nifti(tmp_path / "cplx.nii", (64, 64, 64), np.complex64), "complex")
    _refused(absurd_nifti(tmp_path / "movie.nii", (64, 64, 64, 500)), "4D", "time series")
    assert no_payload_read == []


def test_header_promising_more_than_the_file_holds(tmp_path, no_payload_read):
    _refused(absurd_nifti(tmp_path / "cut.nii", (512, 512, 300)), "truncated", "promises")
    assert no_payload_read == []


def test_dicom_series_is_read_headers_first_then_slice_by_slice(tmp_path, monkeypatch):
    """Every header is read (without pixels) before any pixel data, then each slice once, in order
    along the slice normal, straight into the volume."""
    hu = chest_phantom((24, 20, 10))
    folder = write_series(tmp_path / "series", hu)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"series/{f.name}")
    reads = []
    real = pydicom.dcmread

    def dcmread(src, *args, **kwargs):
        ds = real(src, *args, **kwargs)
        reads.append("header" if kwargs.get("stop_before_pixels") else float(ds.ImagePositionPatient[2]))
        return ds

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    volume = load_volume(archive)
    np.testing.assert_allclose(volume.hu, hu)
    n = hu.shape[2]
    assert reads[:n] == ["header"] * n
    assert len(reads) == 2 * n and reads[n:] == sorted(reads[n:])


def test_budget_from_dicom_headers_before_pixels(tmp_path, monkeypatch):
    """A series whose headers promise more than the memory budget is refused before pixel data."""
    import engine.io.validate as validate

    folder = write_series(tmp_path / "series", chest_phantom((24, 20, 10)))
    monkeypatch.setattr(validate, "MAX_VOLUME_BYTES", 24 * 20 * 9 * 6)  # one slice too many
    full_reads = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda src, *a, **k: (
        full_reads.append(src) if not k.get("stop_before_pixels") else None) or real(src, *a, **k))
    _refused(folder, "memory budget")
    assert full_reads == []


def test_archive_limits_are_not_met_by_a_real_series(tmp_path, phantom):
    """The limits leave room for real series: a deflated CT series of realistic slices passes."""
    rng = np.random.default_rng(0)
    hu = np.maximum(chest_phantom((64, 64, 12)) + rng.normal(0, 8, (64, 64, 12)).round(), -1024)  # noise
    folder = write_series(tmp_path / "series", hu)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"series/{f.name}")
        z.writestr("README.txt", "a" * 4000)  # a tiny, very compressible text file is fine
    np.testing.assert_allclose(load_volume(archive).hu, hu)
    assert stat.S_ISREG(zipfile.ZipFile(archive).infolist()[0].external_attr >> 16)
