"""The WebGL viewer (NiiVue in ui/volume_viewer.py) in a real headless Chromium: a case of the review
app loads and is drawn, the mouse wheel moves the slice with no request to the server, an overlay set
from Python shows in colour with the crosshair on the voxel it was sent to; and a Chromium without
WebGL gets the server-drawn planes instead. Chromium here renders WebGL2 with SwiftShader (software)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from decoder_fixtures import tiny_gpt2_dir, tiny_tokenizer  # noqa: F401
from test_browser_review import ARTIFACTS, chromium_page, free_port, require_chromium

pytestmark = pytest.mark.slow
CANVAS = "#webgl-viewer canvas.rad3d-canvas"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_chromium()
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset
    from ui.app import AppConfig, build_app, launch

    root = tmp_path_factory.mktemp("app")
    data = write_dataset(SynthConfig(n=2, seed=0, scale=8.0), root / "data", progress=False)
    config = AppConfig(data_dir=data, upload_dir=root / "uploads")
    app = build_app(config)
    port = free_port()
    launch(app, config, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", app
    app.close()


def canvas_pixels(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator(CANVAS).screenshot())).convert("RGB")).astype(int)


def tile_centres(page) -> dict[int, tuple[float, float]]:
    """Page coordinates of the centre of each NiiVue tile, by kind (0 axial, 1 coronal, 2 sagittal, 4 3D)."""
    tiles = page.evaluate("""sel => { const c = document.querySelector(sel), nv = c.rad3d.nv;
        const r = c.getBoundingClientRect(), k = r.width / c.width;
        return nv.screenSlices.map(s => { const [l, t, w, h] = s.leftTopWidthHeight;
            return [s.axCorSag, r.left + (l + w / 2) * k, r.top + (t + h / 2) * k]; }); }""", CANVAS)
    return {kind: (x, y) for kind, x, y in tiles}


def voxel(page) -> tuple[int, ...]:
    return tuple(int(v) for v in page.locator(CANVAS).get_attribute("data-vox").split(","))


def test_a_case_loads_and_scrolls_locally(served):
    url, app = served
    browser = app.rad3d_browser
    case = browser.case_names()[0]
    shape = browser.volumes.get(case).shape
    with chromium_page(1400, 1000) as page:
        page.goto(url)
        page.wait_for_function("sel => (document.querySelector(sel)?.dataset.ready || '').length > 0", arg=CANVAS)
        assert not page.locator("#plane-axial").is_visible()  # the fallback stays hidden
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#webgl-viewer").screenshot(path=str(ARTIFACTS / "viewer.png"))
        pixels = canvas_pixels(page)
        assert (pixels.max(axis=2) > 40).mean() > 0.05 and len(np.unique(pixels[..., 0])) > 20  # a CT, drawn
        start = voxel(page)
        assert all(abs(v - n / 2) <= 1 for v, n in zip(start, shape))  # opens on the centre

        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.mouse.move(*tile_centres(page)[0])  # over the axial plane
        draws = page.evaluate("sel => document.querySelector(sel).rad3d.draws", CANVAS)
        for _ in range(3):
            page.mouse.wheel(0, 100)
            time.sleep(0.05)
        page.wait_for_function("([sel, z]) => document.querySelector(sel).dataset.vox.split(',')[2] != z",
                               arg=[CANVAS, str(start[2])])
        after = voxel(page)
        assert after[:2] == start[:2] and after[2] != start[2]  # the axial slice moved, nothing else
        assert page.evaluate("sel => document.querySelector(sel).rad3d.draws", CANVAS) > draws
        assert not (canvas_pixels(page) == pixels).all()
        time.sleep(0.3)
        assert requests == [], f"scrolling asked the server: {requests}"


def test_overlay_and_jump_from_python(tmp_path):
    """The component on its own page: the API another screen uses to show a finding's evidence map."""
    require_chromium()
    import gradio as gr

    from engine.volume import Volume
    from ui.volume_viewer import ViewerFiles, serve_viewer_files, volume_viewer

    shape = (64, 56, 40)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    hu = np.where((x - 32) ** 2 + (y - 28) ** 2 < 24**2, 40.0, -1000.0).astype(np.float32)
    blob = ((x - 44) ** 2 + (y - 20) ** 2 + (z - 12) ** 2 < 36)
    hu[blob] = 300.0
    evidence = np.exp(-((x - 44) ** 2 + (y - 20) ** 2 + (z - 12) ** 2) / 20.0).astype(np.float32)
    volume = Volume(hu=hu, spacing_mm=(0.8, 0.8, 2.0))
    files = serve_viewer_files(ViewerFiles(tmp_path))
    with gr.Blocks() as page_app:
        viewer = volume_viewer()
        plain = gr.Button("plain", elem_id="plain")
        overlaid = gr.Button("overlay", elem_id="overlaid")
        plain.click(lambda: files.value(volume, "phantom"), None, viewer)
        overlaid.click(lambda: files.value(volume, "phantom", overlay=evidence, jump=(44, 20, 12), colormap="red"),
                       None, viewer)
    port = free_port()
    page_app.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with chromium_page(1400, 1000) as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.click("#plain")
            page.wait_for_function("sel => (document.querySelector(sel)?.dataset.ready || '').endsWith('|')",
                                   arg=CANVAS)
            before = canvas_pixels(page)
            page.click("#overlaid")
            page.wait_for_function("sel => !(document.querySelector(sel)?.dataset.ready || '|').endsWith('|')",
                                   arg=CANVAS)
            assert voxel(page) == (44, 20, 12)
            assert "300 HU" in page.locator("#webgl-viewer .rad3d-where").inner_text()  # the crosshair is in the blob
            after = canvas_pixels(page)

            def red(p):  # the red colour map over grey CT (the yellow crosshair, 255/199/0, is not counted)
                return ((p[..., 0] - p[..., 1] > 80) & (p[..., 0] - p[..., 2] > 80)).sum()

            assert red(after) > 100 + 5 * red(before)
            assert files.writes == 2  # the volume once, the overlay once
    finally:
        page_app.close()


def test_without_webgl_the_server_drawn_planes_show(served):
    url, app = served
    with chromium_page(1400, 1000, extra_args=("--disable-3d-apis",)) as page:  # a browser without WebGL
        page.goto(url)
        page.wait_for_selector("#plane-axial img", state="visible")
        assert not page.locator(CANVAS).is_visible()  # the component was hidden on its `nowebgl` event
        src = page.locator("#plane-axial img").first.get_attribute("src")
        page.locator("#slider-axial input[type=range]").fill("1")
        page.wait_for_function("old => document.querySelector('#plane-axial img').src !== old", arg=src)



FINDING = "Medical material"


@pytest.fixture(scope="module")
def metal_app(tmp_path_factory, tiny_gpt2_dir):  # noqa: F811
    """The app on one phantom with a planted pacemaker/port (synth seed 0) and a run whose image model
    is replaced by one that detects metal (tests/test_evidence.py's), so the evidence peak is known."""
    require_chromium()
    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.image_model import ImageModel
    from engine.labels import ct_rate
    from engine.preprocess import PreprocessConfig
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset
    from run_fixtures import write_tiny_run
    from test_evidence import MetalDetector
    from ui.app import AppConfig, build_app, launch

    root = tmp_path_factory.mktemp("metal")
    data = write_dataset(SynthConfig(n=1, seed=0, scale=8.0), root / "data", progress=False)
    run = write_tiny_run(root / "run", tiny_gpt2_dir)[0]
    config = AppConfig(data_dir=data, runs={"tiny": run}, upload_dir=root / "uploads")
    app = build_app(config)
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=1, n_labels=18))
    torch.nn.init.ones_(head.out.weight)
    grid = PreprocessConfig(spacing_mm=(6.0, 6.0, 12.0), hu_range=(-1000.0, 3000.0), shape_xyz=(64, 64, 32))
    app.rad3d_browser.session("tiny").image = ImageModel(MetalDetector(), head, preprocess=grid, label_set=ct_rate(),
                                                         thresholds=np.full(18, 0.5))
    port = free_port()
    launch(app, config, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", app, data
    app.close()


def _planted_mask(data, case: str) -> np.ndarray:
    """The planted object's voxels, regenerated from the phantom's seeds (as rad3d evidence-check does)."""
    from engine.evidence_check import phantom_truth
    from engine.synth.masks import finding_masks

    entry = phantom_truth(data)["cases"][case]
    patient, scan, recon = entry["seeds"]
    names = [f["finding"] for f in entry["findings"]]
    assert FINDING in names
    return finding_masks(scan, names, 8.0, patient_seed=patient, recon_seed=recon, only=[FINDING])[FINDING]


def test_evidence_controls_drive_the_webgl_viewer(metal_app):
    """"Show evidence" puts the finding's map over the WebGL planes (the volume is not downloaded again),
    "Jump to evidence" moves NiiVue's crosshair to a voxel inside the planted object."""
    url, app, data = metal_app
    case = app.rad3d_browser.case_names()[0]
    with chromium_page(1400, 1200) as page:
        page.goto(url)
        page.wait_for_function("sel => (document.querySelector(sel)?.dataset.ready || '').length > 0", arg=CANVAS)
        assert FINDING in page.locator("#evidence-finding input").input_value()  # the finding chosen
        before = canvas_pixels(page)
        start = voxel(page)
        loads = page.evaluate("sel => document.querySelector(sel).rad3d.loads", CANVAS)
        page.click("#evidence-show button, button#evidence-show")
        page.wait_for_function("sel => !(document.querySelector(sel)?.dataset.ready || '|').endsWith('|')",
                               arg=CANVAS, timeout=20000)
        state = page.evaluate("""sel => { const v = document.querySelector(sel).rad3d;
            return [v.loads, v.overlayLoads, v.nv.volumes.length, v.nv.volumes[1].opacity]; }""", CANVAS)
        assert state == [loads, 1, 2, 0.5]  # the volume not again, the overlay once, at the slider's opacity
        assert voxel(page) == start  # showing does not move the crosshair

        page.click("#evidence-jump button, button#evidence-jump")
        page.wait_for_function("([sel, v]) => document.querySelector(sel).dataset.vox !== v",
                               arg=[CANVAS, ",".join(map(str, start))], timeout=20000)
        peak = voxel(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#webgl-viewer").screenshot(path=str(ARTIFACTS / "viewer_evidence.png"))
        assert _planted_mask(data, case)[peak], f"crosshair at {peak}, outside the planted object"

        def coloured(p):  # saturated pixels: the warm colour map over grey CT (the crosshair is in both)
            return ((p.max(axis=2) - p.min(axis=2)) > 80).sum()

        assert coloured(canvas_pixels(page)) > coloured(before) + 100  # the map shows around its peak
        assert page.evaluate("sel => document.querySelector(sel).rad3d.overlayLoads", CANVAS) == 1  # nothing re-sent

        # a click on the finding in the reference report jumps there too (from a slice away from it)
        page.mouse.move(*tile_centres(page)[0])
        page.mouse.wheel(0, 300)
        page.wait_for_function("([sel, v]) => document.querySelector(sel).dataset.vox !== v",
                               arg=[CANVAS, ",".join(map(str, peak))])
        page.click(f'#reference-report [data-finding="{FINDING}"]')
        page.wait_for_function("([sel, v]) => document.querySelector(sel).dataset.vox === v",
                               arg=[CANVAS, ",".join(map(str, peak))], timeout=20000)
