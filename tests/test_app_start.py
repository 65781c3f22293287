"""The app starts on the embedded default: the demo's held-out test phantoms written on first start
and listed first, the method's run first, the demo's own evaluation in the Research tab; then served
on loopback. (The browser-driven test of the screens belongs with the app's own tests.)"""

from __future__ import annotations

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
    mp.setattr(demo, "PREVIEW_CASES", 3)
    yield home
    mp.undo()


def test_first_start_writes_the_demo_phantoms_once(demo_home):
    data = demo.ensure_demo_data()
    assert data == demo_home / "preview" / "test-phantoms" and (data / "reports.csv").is_file()
    stamp = (data / "reports.csv").stat().st_mtime_ns
    assert demo.ensure_demo_data() == data
    assert (data / "reports.csv").stat().st_mtime_ns == stamp  # not rewritten on later starts
    assert demo.demo_runs() == {}


def test_the_preview_is_the_demo_test_split_and_is_listed_as_held_out(demo_home, tmp_path):
    """The first start's cases are the very test phantoms the demo build writes (so no run learned
    from them), named and labelled by their split, and a dataset of all splits lists test first."""
    import pandas as pd

    from engine.synth.config import SynthConfig
    from engine.synth.writer import assign_splits, flat_names, plan_dataset, write_dataset

    preview = demo.ensure_demo_data()
    splits = pd.read_csv(preview / "splits.csv")
    assert set(splits["split"]) == {"test"} and len(splits) == 3
    recipe = demo.DemoRecipe()
    cfg = SynthConfig(n=recipe.cases, seed=recipe.seed, scale=recipe.scale)
    plans = plan_dataset(cfg)
    split_of, names = assign_splits(plans, cfg), flat_names(plans, assign_splits(plans, cfg))
    build_test = [names[p.name] for p in plans if split_of[p.name] == "test"]  # what the build writes
    assert len(build_test) > 100 and list(splits["VolumeName"]) == build_test[:3]
    browser = CaseBrowser(AppConfig(data_dir=preview))
    for name, (label, value) in zip(browser.case_names(), browser.case_choices()):
        assert name == value and name.startswith("test_") and label == f"{name} · held-out test"

    mixed = write_dataset(SynthConfig(n=8, seed=2, scale=8.0, workers=1), tmp_path / "mixed", progress=False)
    browser = CaseBrowser(AppConfig(data_dir=mixed, upload_dir=tmp_path / "up"))
    shown = [browser.dataset.case(n).split for n in browser.case_names()]
    assert set(shown) == {"train", "valid", "test"}
    assert shown == sorted(shown, key=("test", "valid", "train").index)  # test, then valid, then train
    assert all(n.startswith(browser.dataset.case(n).split + "_") for n in browser.case_names())


def test_demo_runs_put_the_method_first(demo_home):
    runs = demo_home / "demo" / "runs"
    for name in ("v2", "v3", "v1-extra"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text("{}")
    try:
        assert list(demo.demo_runs()) == ["v3", "v2", "v1-extra"]
    finally:
        import shutil

        shutil.rmtree(runs)


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


def test_on_the_demo_the_research_tab_defaults_to_its_evaluation(tmp_path):
    import cli
    from ui.commands.app import app_config
    from ui.demo import Demo

    demo_ = Demo(data=lambda: tmp_path, runs=lambda: {}, variants=("v3", "v2"), build=lambda say: {},
                 evaluation=lambda: tmp_path / "eval")
    parser = cli.build_parser()
    assert app_config(parser.parse_args(["app"]), demo_).eval_dir == tmp_path / "eval"
    assert str(app_config(parser.parse_args(["app", "--eval", "E"]), demo_).eval_dir) == "E"
    mine = app_config(parser.parse_args(["app", "--run", f"x={tmp_path}"]), demo_)
    assert mine.eval_dir is None  # another run: the demo's evaluation is not its own
