"""The review app driven in a real headless Chromium (Debian's /usr/bin/chromium) with Playwright:
a phantom dataset and the tiny test run; choose a case, move each slider, switch a window preset,
generate a report, compare two runs, send a bad upload, and save a screenshot to test-artifacts/.

Without Chromium the test is skipped, except in CI (CI=true), where it fails and says how to
install it (scripts/install.sh test does)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.slow


def require_chromium():
    if CHROMIUM.is_file():
        return
    why = (f"{CHROMIUM} is missing: install Debian's chromium and chromium-driver packages "
           "(`bash scripts/install.sh test` does it as root)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_run):  # noqa: F811
    require_chromium()
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset
    from ui.app import AppConfig, build_app, launch

    root = tmp_path_factory.mktemp("app")
    data = write_dataset(SynthConfig(n=4, seed=0, scale=8.0), root / "data", progress=False)
    config = AppConfig(data_dir=data, runs={"tiny": tiny_run[0], "tiny-again": tiny_run[0]},
                       upload_dir=root / "uploads", max_upload_mb=2, viewer="png")  # the WebGL one: test_browser_viewer
    app = build_app(config)
    port = free_port()
    launch(app, config, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", app, config
    app.close()


@contextlib.contextmanager
def chromium_page(width: int, height: int, extra_args: tuple[str, ...] = ()):
    """A page of Debian's Chromium, headless, in a throwaway profile (the browser tests' one setup)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="rad3d-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + list(extra_args), headless=True,
            viewport={"width": width, "height": height},
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def page(served):
    with chromium_page(1500, 1000) as page:
        yield page


def image_src(page, plane: str) -> str:
    return page.locator(f"#plane-{plane} img").first.get_attribute("src") or ""


def wait_src_change(page, plane: str, old: str) -> str:
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel); return i && i.src && i.src !== old; }",
        arg=[f"#plane-{plane} img", old], timeout=TIMEOUT_MS)
    return image_src(page, plane)


def test_review_app_in_a_real_browser(served, page, tmp_path):
    url, app, config = served
    browser = app.rad3d_browser
    cases = browser.case_names()
    page.goto(url)
    page.wait_for_selector("#plane-axial img")
    assert cases[0] in page.locator("#case-info").inner_text()

    # choose another case from the list
    before = {p: image_src(page, p) for p in ("axial", "coronal", "sagittal")}
    page.locator("#case-select input").click()
    page.get_by_role("option", name=browser.case_label(cases[2])).click()  # shown with its split
    page.wait_for_function("n => document.querySelector('#case-info').innerText.includes(n)", arg=cases[2])
    shape = browser.volumes.get(cases[2]).shape
    current = {p: wait_src_change(page, p, before[p]) for p in before}

    # each slider: its own plane is redrawn (and the crosshair moves in the others)
    for plane, axis in (("axial", 2), ("coronal", 1), ("sagittal", 0)):
        slider = page.locator(f"#slider-{plane} input[type=range]")
        assert slider.get_attribute("max") == str(shape[axis] - 1)
        slider.fill(str(shape[axis] // 4))
        current[plane] = wait_src_change(page, plane, current[plane])
        for other in set(current) - {plane}:
            current[other] = image_src(page, other)

    # window preset: width and level follow, planes are redrawn
    page.locator("#window-preset label", has_text="bone").click()
    page.wait_for_function("() => document.querySelector('#window-width input[type=number]').value === '1800'")
    assert page.locator("#window-level input[type=number]").input_value() == "400"
    current["axial"] = wait_src_change(page, "axial", current["axial"])

    # generate: probabilities chart (18 bars), report text, time to report
    page.locator("#max-tokens input[type=number]").fill("24")
    page.locator("#max-tokens input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#timing').innerText.includes('Time to report')")
    page.wait_for_selector("#probabilities .barlayer .point")  # plotly draws after the update arrives
    assert page.locator("#probabilities .barlayer .point").count() == 18
    generated = page.locator("#generated-report").inner_text().strip()
    assert generated and "(empty report)" not in generated
    assert page.locator("#reference-report").inner_text().strip()
    assert "Positives" in page.locator("#report-status").inner_text()
    assert "Trained on: unknown" in page.locator("#run-provenance").inner_text()  # the fixture run records no data
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)

    # a bad upload: a readable message in the page, and the server keeps serving
    bad = tmp_path / "broken-scan.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file" * 100)
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.wait_for_function("() => document.querySelector('#upload-status').innerText.includes('Upload')")
    status = page.locator("#upload-status").inner_text()
    assert "broken-scan.nii.gz" in status and str(config.upload_dir) not in status
    assert list(config.upload_dir.iterdir()) == []  # the refused file is not kept
    slider = page.locator("#slider-axial input[type=range]")
    slider.fill("1")
    wait_src_change(page, "axial", current["axial"])

    # compare mode: both runs side by side for the chosen case
    page.locator("#tab-compare-button, button[role=tab]:has-text('Compare runs')").first.click()
    page.locator("#compare").click()
    page.wait_for_function("() => document.querySelector('#compare-status').innerText.includes('2 runs compared')")
    for i in (0, 1):
        assert "time to report" in page.locator(f"#compare-{i}").inner_text()
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_server_hands_out_no_file_outside_its_folders(served):
    url, app, config = served
    for target in ("/etc/passwd", str(config.data_dir / "reports.csv"), str(Path(__file__).resolve())):
        for route in ("gradio_api/file=", "file="):
            try:
                status = urllib.request.urlopen(url + route + target, timeout=10).status
            except urllib.error.HTTPError as err:
                status = err.code
            assert status >= 400, f"{route}{target} was served"
