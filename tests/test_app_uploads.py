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

OWNER = "a1b2c3d4e5"  # a browser session hash


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
    key = area.store(src, "../../outside/../my scan.nii.gz", OWNER)
    assert key.startswith(UPLOAD_PREFIX) and key.endswith("-my_scan.nii.gz")
    stored = [f for f in (tmp_path / "uploads").rglob("*") if f.is_file()]
    assert len(stored) == 1 and stored[0].name == key[len(UPLOAD_PREFIX):]
    assert not (tmp_path / "outside").exists()
    volume = area.load(key, OWNER)
    np.testing.assert_array_equal(volume.hu, chest_phantom())
    assert volume.spacing_mm == pytest.approx((1.0, 1.2, 2.5))
    assert volume.source == display_name(key) == "my_scan.nii.gz (uploaded)"


@pytest.mark.parametrize("key", [UPLOAD_PREFIX + "../secret.txt", UPLOAD_PREFIX + "/etc/passwd",
                                 UPLOAD_PREFIX + "..", "../secret.txt", UPLOAD_PREFIX + "never-given.nii"])
def test_case_keys_from_the_client_cannot_reach_other_files(tmp_path, key):
    (tmp_path / "secret.txt").write_text("x")
    area = UploadArea(tmp_path / "uploads")
    with pytest.raises(VolumeError):
        area.path(key, OWNER)


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
    key = area.store(bad, "bad.nii.gz", OWNER)
    with pytest.raises(VolumeError) as err:
        area.load(key, OWNER)
    assert "bad.nii.gz (uploaded)" in str(err.value) and str(area.root) not in str(err.value)


def test_zipped_dicom_upload_reads_without_patient_fields(tmp_path):
    hu = chest_phantom((24, 20, 8))
    folder = write_series(tmp_path / "series", hu)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"series/{f.name}")
    area = UploadArea(tmp_path / "uploads")
    volume = area.load(area.store(archive, "series.zip", OWNER), OWNER)
    np.testing.assert_allclose(volume.hu, hu)
    assert PATIENT not in repr(volume.meta) and "MRN-0042" not in repr(volume.meta)


# -- private and temporary -------------------------------------------------------------------------

def _nifti(tmp_path, name="mine.nii.gz"):
    return write_nifti(tmp_path / name, chest_phantom().astype(np.int16), lps_affine((1.0, 1.0, 2.0)))


def test_a_second_session_cannot_list_or_open_the_first_ones_upload(tmp_path):
    area = UploadArea(tmp_path / "uploads")
    key = area.store(_nifti(tmp_path), "mine.nii.gz", "session-A")
    assert area.keys("session-A") == [key] and area.keys("session-B") == [] and area.keys("") == []
    for owner in ("session-B", ""):
        with pytest.raises(VolumeError, match="not among this browser session's uploads|browser session"):
            area.load(key, owner)
    assert "session-A" not in repr(sorted(p.name for p in area.root.rglob("*")))  # only a digest on disk
    assert len(key) > len(UPLOAD_PREFIX) + 16 + len("-mine.nii.gz") - 1  # 64 random bits: not guessable


def test_uploads_go_when_the_session_ends_or_after_the_retention_time(tmp_path):
    import os
    import time

    area = UploadArea(tmp_path / "uploads", retention_s=3600)
    legacy = area.root / "1a2b3c4d-kept-forever-before.nii.gz"  # what older versions left behind
    legacy.write_bytes(b"x")
    os.utime(legacy, (time.time() - 30 * 24 * 3600,) * 2)
    a = area.store(_nifti(tmp_path), "a.nii.gz", "session-A")
    b_old = area.store(_nifti(tmp_path), "old.nii.gz", "session-B")
    b_new = area.store(_nifti(tmp_path), "new.nii.gz", "session-B")
    old = area.path(b_old, "session-B")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    assert area.purge_expired() == 2 and not old.exists() and not legacy.exists()
    assert area.keys("session-B") == [b_new] and area.keys("session-A") == [a]
    assert area.forget("session-A") == 1 and area.keys("session-A") == []
    os.utime(area.path(b_new, "session-B"), (time.time() - 2 * 3600,) * 2)
    area.purge_expired()
    assert [p for p in area.root.rglob("*")] == []  # the emptied session folder went too


def test_sweeper_thread_purges_on_its_own(tmp_path):
    import os
    import time

    area = UploadArea(tmp_path / "uploads", retention_s=60)
    key = area.store(_nifti(tmp_path), "a.nii.gz", "session-A")
    path = area.path(key, "session-A")
    os.utime(path, (time.time() - 120,) * 2)
    stop = area.start_sweeper(interval_s=0.05)
    try:
        deadline = time.time() + 5
        while path.exists() and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    assert not path.exists()


def test_default_cap_takes_a_real_thin_slice_chest_ct_and_says_so():
    import argparse

    from ui.commands.app import register
    from ui.upload_limits import DEFAULT_MAX_UPLOAD_MB

    thin_chest_nii = 352 + 512 * 512 * 1000 * 2  # 1,000 slices of 0.625 mm, int16, uncompressed
    assert thin_chest_nii < DEFAULT_MAX_UPLOAD_MB * 2**20 < 1024 * 2**20
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    app_parser = parser._subparsers._group_actions[0].choices["app"]
    args = app_parser.parse_args([])
    assert args.max_upload_mb == DEFAULT_MAX_UPLOAD_MB and args.upload_retention_hours > 0
    help_text = app_parser.format_help()
    assert "chest CT" in help_text and "hours" in help_text


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    return write_dataset(SynthConfig(n=2, seed=0, scale=8.0), tmp_path_factory.mktemp("app") / "data",
                         progress=False)


def _handler(app, name):
    return next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_through_the_app_a_second_session_sees_nothing_and_temp_copies_go(phantom_data, tmp_path):
    """The app's own handlers, called as Gradio calls them for two browser sessions: B's case list
    lacks A's upload and B cannot open it even by its key (though A's volume is cached); Gradio's
    temporary copy is deleted at once, accepted or refused; A's upload goes when A's page closes."""
    from types import SimpleNamespace

    from ui.app import AppConfig, build_app

    config = AppConfig(data_dir=phantom_data, upload_dir=tmp_path / "uploads")
    assert config.max_upload_mb < 1024 and config.upload_retention_hours > 0  # defaults: a chest CT, hours
    app = build_app(config)
    a, b = SimpleNamespace(session_hash="session-A"), SimpleNamespace(session_hash="session-B")
    on_upload, on_case, on_filter = (_handler(app, n) for n in ("on_upload", "on_case", "on_filter"))
    temp_root = next(c for c in app.blocks.values() if getattr(c, "elem_id", None) == "upload").GRADIO_CACHE

    def gradio_copy(src, name):
        folder = tmp_path / "gradio" if temp_root is None else __import__("pathlib").Path(temp_root)
        target = folder / "0123abcd" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
        return target

    copy = gradio_copy(_nifti(tmp_path), "mine.nii.gz")
    dropdown, status = on_upload(str(copy), a)
    key = dropdown.value
    assert key.startswith(UPLOAD_PREFIX) and "Uploaded mine.nii.gz" in status
    assert not copy.exists() and not copy.parent.exists()
    assert on_case(key, 1500, -600, None, a)[8].startswith("**mine.nii.gz (uploaded)**")  # A sees it (cached now)

    def listed(request):
        return [value for _label, value in on_filter("", "(any)", request).choices]

    assert key not in listed(b) and key in listed(a)
    refused = on_case(key, 1500, -600, None, b)
    assert refused[0] is None and "not among this browser session's uploads" in refused[8]

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti" * 100)
    bad_copy = gradio_copy(bad, "broken.nii.gz")
    _, status = on_upload(str(bad_copy), b)
    assert "broken.nii.gz" in status and not bad_copy.exists()
    assert app.rad3d_browser.uploads.keys("session-B") == []
    assert len(list(config.upload_dir.iterdir())) == 1  # A's folder only: nothing of B's refused upload

    app.rad3d_end_session(a)
    assert app.rad3d_browser.uploads.keys("session-A") == []
    assert [p for p in config.upload_dir.rglob("*") if p.is_file()] == []
