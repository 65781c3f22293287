"""`rad3d report VOLUME --run RUN` reads and checks the volume before any model is loaded: a bad or
missing file is refused in one line naming the file and the real problem, with no traceback and
without InferenceSession.load ever being called; plausible CT (also one stored with a 0 HU
background) gets through to the loader."""

from __future__ import annotations

import struct
import tarfile
import time

import numpy as np
import pytest

from cli import main
from conftest import chest_phantom, lps_affine, write_nifti
from engine.errors import ConfigError
from test_io_dicom import write_series


@pytest.fixture
def loads(monkeypatch):
    """Replaces the model loader: records its calls and stops there (no model in these tests)."""
    from engine.inference import InferenceSession

    calls = []

    def load(run_dir, **kwargs):
        calls.append(str(run_dir))
        raise ConfigError("stub loader reached: the volume was accepted", run_dir)

    monkeypatch.setattr(InferenceSession, "load", staticmethod(load))
    return calls


def _report(path, tmp_path, capsys, *extra) -> tuple[int, str]:
    start = time.perf_counter()
    rc = main(["report", str(path), "--run", str(tmp_path / "run"), *extra])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert elapsed < 10, f"refusal took {elapsed:.1f} s"
    return rc, err


def head_ct_zero_background(shape=(48, 48, 24), seed=0) -> np.ndarray:
    """A head CT as some converters store it: outside the head 0 HU (not air); scalp, a skull of
    cortical bone, brain and ventricles at their HU, scanner noise; no air anywhere."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt((x / 0.85) ** 2 + (y / 0.95) ** 2 + (z / 1.6) ** 2)
    hu = np.zeros(shape, dtype=np.float32)
    body = r < 1
    hu[body] = 45 + np.random.default_rng(seed).normal(0, 6, body.sum())  # scalp and muscle
    hu[(r < 0.93) & (r >= 0.82)] = 1200  # skull
    hu[r < 0.82] = 33 + np.random.default_rng(seed + 1).normal(0, 5, (r < 0.82).sum())  # brain
    hu[((x / 0.15) ** 2 + (y / 0.35) ** 2 + (z / 0.6) ** 2) < 1] = 8  # ventricles
    return np.round(hu)


BAD_INPUTS = {}


def _bad(name):
    def register(make):
        BAD_INPUTS[name] = make
        return make
    return register


@_bad("missing file")
def _missing(tmp_path):
    return tmp_path / "absent.nii.gz", ["no such file"]


@_bad("tar named .zip")
def _tar(tmp_path):
    folder = write_series(tmp_path / "series", chest_phantom((16, 16, 8)))
    path = tmp_path / "series.zip"
    with tarfile.open(path, "w") as tar:
        tar.add(folder, arcname="series")
    return path, ["not a zip archive", "a tar archive named .zip"]


@_bad("NIfTI named .dcm")
def _nifti_dcm(tmp_path):
    path = write_nifti(tmp_path / "ct.nii", chest_phantom(), lps_affine((0.8, 0.8, 2.0)))
    return path.rename(tmp_path / "ct.dcm"), ["a NIfTI file named .dcm", "rename it .nii"]


@_bad("gzipped NIfTI named .dcm")
def _nifti_gz_dcm(tmp_path):
    path = write_nifti(tmp_path / "ct.nii.gz", chest_phantom(), lps_affine((0.8, 0.8, 2.0)))
    return path.rename(tmp_path / "IM0001.dcm"), ["a gzipped NIfTI file named .dcm"]


@_bad("text named .dcm")
def _text_dcm(tmp_path):
    path = tmp_path / "IM0001.dcm"
    path.write_text("not an image at all\n" * 20)
    return path, ["not a DICOM file", "no 'DICM' marker"]


@_bad("50 mm slices")
def _thick(tmp_path):
    path = write_nifti(tmp_path / "thick.nii.gz", chest_phantom(), lps_affine((0.8, 0.8, 50.0)))
    return path, ["slices 50 mm apart", "over the 10 mm of CT practice"]


@_bad("in-plane 8 mm")
def _coarse(tmp_path):
    path = write_nifti(tmp_path / "coarse.nii.gz", chest_phantom(), lps_affine((8.0, 8.0, 2.0)))
    return path, ["in-plane spacing over 5 mm"]


@_bad("negative pixdim")
def _negative_nifti(tmp_path):
    path = write_nifti(tmp_path / "neg.nii", chest_phantom(), lps_affine((0.8, 0.7, 2.5)))
    header = bytearray(path.read_bytes())
    header[84:88] = struct.pack("<f", -0.7)  # pixdim[2]; nibabel would quietly make it positive
    path.write_bytes(bytes(header))
    return path, ["negative size"]


@_bad("negative PixelSpacing")
def _negative_dicom(tmp_path):
    folder = write_series(tmp_path / "series", chest_phantom((16, 16, 8)), spacing=(0.8, -0.7, 2.5))
    return folder, ["PixelSpacing", "negative or zero"]


@_bad("MR with a zero background")
def _mr(tmp_path):
    head = head_ct_zero_background()
    rng = np.random.default_rng(3)
    mr = np.where(head != 0, np.abs(rng.normal(600, 200, head.shape)), 0).astype(np.float32)
    return write_nifti(tmp_path / "t1.nii.gz", mr, lps_affine((0.9, 0.9, 3.0))), ["look like MR"]


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_before_any_model_loads(case, tmp_path, capsys, loads):
    path, problems = BAD_INPUTS[case](tmp_path)
    rc, err = _report(path, tmp_path, capsys)
    assert rc == 1 and loads == []
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err, err
    for problem in problems:
        assert problem in err, err


def test_ct_with_zero_hu_background_reaches_the_model(tmp_path, capsys, loads):
    """A head CT whose outside was stored as 0 HU has no air to find; its body's own values
    (soft tissue and cortical bone at CT values) show it is CT."""
    path = write_nifti(tmp_path / "head.nii.gz", head_ct_zero_background().astype(np.int16),
                       lps_affine((0.5, 0.5, 2.5)))
    # Read as CT, it is then refused as what it is, a head and not a chest, still before any model ...
    rc, err = _report(path, tmp_path, capsys)
    assert rc == 1 and loads == [] and "not a chest CT" in err and "MR" not in err, err
    # ... and --force takes it on to the model (its draft is then marked).
    rc, err = _report(path, tmp_path, capsys, "--force")
    assert loads == [str(tmp_path / "run")], err
    assert "stub loader reached" in err
    from engine.io import load_volume

    assert load_volume(path).hu.max() == 1200  # read and accepted as CT, not refused as MR


def test_good_chest_ct_reaches_the_model_after_being_read(tmp_path, capsys, loads, monkeypatch):
    import engine.io as io

    order = []
    real = io.load_volume
    monkeypatch.setattr(io, "load_volume", lambda *a, **k: order.append("read") or real(*a, **k))
    loads_before = loads
    # a coarse grid gives the toy chest a real chest's size (the domain guard wants lungs of a real size)
    path = write_nifti(tmp_path / "chest.nii.gz", chest_phantom(), lps_affine((5.0, 5.0, 10.0)))
    _report(path, tmp_path, capsys)
    assert order == ["read"] and loads_before == [str(tmp_path / "run")]


@pytest.mark.parametrize("name", ["lung1_image.nrrd", "lung2_image.nrrd"])
def test_real_chest_ct_with_air_stored_as_0_hu_is_ct_and_real_ct_as_mr_is_not(name, tmp_path):
    """Real chest CTs (pyradiomics' test data) with every voxel below -200 HU (air, lung, fat) set
    to 0, as a converter with a 0 HU background would leave them: still CT, by the body's values.
    The same anatomy on an MR-like scale (tissue values x4 + 300) is refused."""
    from engine.errors import VolumeError
    from engine.io import load_volume
    from test_real_ct import real_ct

    volume = load_volume(real_ct(name))
    no_air = np.where(volume.hu < -200, 0, volume.hu).astype(np.int16)
    spacing = volume.spacing_mm
    path = write_nifti(tmp_path / "no_air.nii.gz", no_air, lps_affine(spacing))
    assert load_volume(path).hu.min() >= -200
    mr_like = np.where(no_air == 0, 0, np.abs(no_air.astype(np.float32)) * 4 + 300).astype(np.float32)
    with pytest.raises(VolumeError, match="look like MR"):
        load_volume(write_nifti(tmp_path / "mr_like.nii.gz", mr_like, lps_affine(spacing)))
