"""The app starts on the embedded default: demo phantoms written on first start, then served on
loopback. (The browser-driven test of the screens belongs with the app's own tests.)"""

from __future__ import annotations

import dataclasses
import socket
import urllib.request

import pytest

from training.demo import first_start as demo  # what cli.py hands the app as its demo
from ui.app import AppConfig, CaseBrowser, build_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("RAD3D_HOME", str(home))
    mp.setattr(demo, "PREVIEW", dataclasses.replace(demo.PREVIEW, cases=3))
    yield home
    mp.undo()


def test_first_start_writes_the_demo_phantoms_once(demo_home):
    data = demo.ensure_demo_data()
    assert data == demo_home / "preview" / "demo" / "phantoms" and (data / "reports.csv").is_file()
    stamp = (data / "reports.csv").stat().st_mtime_ns
    assert demo.ensure_demo_data() == data
    assert (data / "reports.csv").stat().st_mtime_ns == stamp  # not rewritten on later starts
    assert demo.demo_runs() == {}


def test_the_built_demo_dataset_is_preferred_to_the_preview(demo_home, tmp_path):
    import shutil

    built = demo_home / "demo" / "phantoms"
    shutil.copytree(demo.ensure_demo_data(), built)
    try:
        assert demo.ensure_demo_data() == built
    finally:
        shutil.rmtree(built)


def test_case_browser_searches_and_filters(demo_home):
    browser = CaseBrowser(AppConfig(data_dir=demo.ensure_demo_data()))
    names = browser.case_names()
    assert len(names) == 3
    assert browser.case_names(names[1].upper()) == [names[1]]  # case-insensitive
    assert browser.case_names("no-such-case") == []
    for finding in browser.dataset.label_set.names:
        expected = [c.volume_name for c in browser.dataset.cases if c.labels[browser.dataset.label_set.index(finding)]]
        assert browser.case_names("", finding) == expected
    volume = browser.volumes.get(names[0])
    assert browser.volumes.get(names[0]) is volume and browser.volumes.loads == 1


def test_app_serves_on_loopback(demo_home):
    app = build_app(AppConfig(data_dir=demo.ensure_demo_data()))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "rad3d" in page or "gradio" in page.lower()
    finally:
        app.close()


def test_uploads_join_the_case_list_and_unknown_runs_are_refused(demo_home, tmp_path):
    import numpy as np

    from conftest import chest_phantom, lps_affine, write_nifti
    from engine.errors import ConfigError, DatasetError

    browser = CaseBrowser(AppConfig(data_dir=demo.ensure_demo_data(), upload_dir=tmp_path / "up"))
    src = write_nifti(tmp_path / "mine.nii.gz", chest_phantom().astype(np.int16), lps_affine((1.0, 1.0, 2.0)))
    key = browser.add_upload(src, "mine.nii.gz", "session-1")
    assert browser.case_names(owner="session-1")[0] == key and browser.reference(key) == ("", None)
    assert browser.volume(key, "session-1").shape == chest_phantom().shape
    name = browser.case_names(owner="session-1")[1]
    text, labels = browser.reference(name)
    assert text == browser.dataset.case(name).findings and set(labels) == set(browser.label_names)
    with pytest.raises(DatasetError, match="no case named"):
        browser.volumes.get("../../etc/passwd")
    with pytest.raises(ConfigError, match="no run named"):
        browser.session("../somewhere")


def test_command_binds_loopback_unless_told():
    import cli

    parser = cli.build_parser()
    args = parser.parse_args(["app"])
    assert args.host == "127.0.0.1" and args.max_upload_mb == 600.0 and args.eval_dir is None
    args = parser.parse_args(["app", "--host", "0.0.0.0", "--eval", "E", "--max-upload-mb", "5"])
    assert (args.host, args.eval_dir, args.max_upload_mb) == ("0.0.0.0", "E", 5.0)
