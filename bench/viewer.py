"""The review app's two viewers on one 512 × 512 × 300 chest-like volume, measured in the same run in
headless Chromium (Debian's /usr/bin/chromium; WebGL2 there is SwiftShader, a software renderer) on a
loopback Gradio server:

- WebGL (ui/volume_viewer.py, NiiVue): time to first render of a case (the server writes the gzipped
  NIfTI once; the browser downloads, inflates, uploads it to the GPU and draws), again with the file
  already written, and the frame time while scrolling in the layouts "3 planes" and "3 planes + 3D" (one
  wheel step per animation frame over the axial plane; plus the draw time of one step, synchronous, GPU
  work included via gl.finish()).
- PNG (ui/viewer.py, today's fallback): time to first render of the case (three planes drawn by the
  server, sent, decoded) and the time per slice change (slider moved → new axial plane shown).

Targets (issue #20): first render <= 2 s on loopback, scrolling at display rate.

    python bench/viewer.py [--shape 512 512 300] [--scrolls 20] [--slice-changes 10]

Needs the test extra (playwright) and Chromium, as the browser tests do (`bash scripts/install.sh test`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SPACING = (0.75, 0.75, 1.5)
CANVAS = "#webgl-viewer canvas.rad3d-canvas"


def chest_volume(shape) -> np.ndarray:
    """Body ellipse at 40 HU with two lungs at -850 HU in air, plus 20 HU noise (real CT's is similar)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to((x / 0.9) ** 2 + (y / 0.7) ** 2 < 1, shape)] = 40.0
    hu[np.broadcast_to(((np.abs(x) - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 + (z / 1.1) ** 2 < 1, shape)] = -850.0
    return hu + np.random.default_rng(0).normal(0, 20, shape).astype(np.float32)


def bench_page(volume, max_side: int):
    """A page with both viewers: the WebGL component and the three PNG planes with an axial slider,
    wired as the Review tab wires them. Returns (app, timings): timings collects server-side seconds."""
    import gradio as gr

    from ui.plane_image import png_file
    from ui.viewer import PLANES, WINDOW_PRESETS, clamp_crosshair, render_views
    from ui.volume_viewer import ViewerFiles, serve_viewer_files, volume_viewer

    files = serve_viewer_files(ViewerFiles())
    timings: dict[str, list[float]] = {"write": []}
    width, level = WINDOW_PRESETS["lung"]
    nx, ny, nz = volume.shape

    def open_webgl(token):
        start = time.perf_counter()
        writes = files.writes
        value = files.value(volume, f"bench case ({token})")
        if files.writes > writes:
            timings["write"].append(time.perf_counter() - start)
        return value

    with gr.Blocks() as app:
        viewer = volume_viewer()
        token = gr.Number(0, elem_id="token")
        show = gr.Button("webgl", elem_id="open-webgl")
        with gr.Row():
            images = [gr.Image(type="filepath", format="png", elem_id=f"plane-{p}", buttons=[]) for p in PLANES]
        axial = gr.Slider(0, nz - 1, value=nz // 2, step=1, elem_id="slider-axial")
        show_png = gr.Button("png", elem_id="open-png")

        def planes(z):
            cross = clamp_crosshair(volume.shape, nx // 2, ny // 2, z)
            return [png_file(im, images[0].GRADIO_CACHE)
                    for im in render_views(volume.hu, volume.spacing_mm, cross, width, level, max_side=max_side)]

        show.click(open_webgl, token, viewer)
        show_png.click(planes, axial, images)
        axial.input(planes, axial, images, show_progress="hidden", trigger_mode="always_last")
    return app, timings


WAIT_READY = "([sel, n]) => (document.querySelector(sel)?.dataset.ready || '').length > 0 && " \
             "document.querySelector(sel).rad3d.loads === n"

SCROLL_JS = """async ([sel, n]) => {
  const c = document.querySelector(sel), nv = c.rad3d.nv, gl = nv.gl;
  const r = c.getBoundingClientRect(), k = r.width / c.width;
  const [l, t, w, h] = nv.screenSlices.find(s => s.axCorSag === 0).leftTopWidthHeight;
  const at = {clientX: r.left + (l + w / 2) * k, clientY: r.top + (t + h / 2) * k, bubbles: true, cancelable: true};
  const wheel = (dy) => c.dispatchEvent(new WheelEvent("wheel", {...at, deltaY: dy}));
  const draw = [];
  for (let i = 0; i < n; i++) {  // one step at a time, GPU included
    const t0 = performance.now(); wheel(i % 2 ? -100 : 100); gl.finish(); draw.push(performance.now() - t0);
  }
  const z0 = c.dataset.vox;
  const frames = await new Promise(done => {  // one step per animation frame, as a held scroll wheel
    const times = [];
    const step = (now) => { times.push(now); wheel(100); gl.finish();
      if (times.length <= n) requestAnimationFrame(step); else done(times); };
    requestAnimationFrame(step);
  });
  const gaps = frames.slice(1).map((v, i) => v - frames[i]);
  return {draw, gaps, moved: c.dataset.vox !== z0};
}"""


def median(values) -> float:
    return statistics.median(values)


def measure_webgl(page, timings, scrolls: int) -> dict:
    results = {}
    for n, key in ((1, "first"), (2, "cached")):
        start = time.perf_counter()
        page.locator("#token input").fill(str(n))
        page.click("#open-webgl")
        print(f"  WebGL open ({key}) asked", flush=True)
        page.wait_for_function(WAIT_READY, arg=[CANVAS, n], timeout=120_000, polling=50)
        results[key] = time.perf_counter() - start
        print(f"  WebGL open ({key}): {results[key]:.2f} s", flush=True)
        page.evaluate("sel => { document.querySelector(sel).rad3d.volume = null; }", CANVAS)  # load it again
    results["write"] = timings["write"][0]
    for layout, name in (("planes", "3 planes"), ("planes3d", "3 planes + 3D")):
        page.evaluate("([sel, t]) => document.querySelector(sel).rad3d.setLayout(t)", [CANVAS, layout])
        scroll = page.evaluate(SCROLL_JS, [CANVAS, scrolls])
        assert scroll["moved"], "scrolling did not move the slice"
        gaps = sorted(scroll["gaps"])
        print(f"  scrolled {name}: {median(gaps):.1f} ms per frame", flush=True)
        results[name] = {"draw_ms": median(scroll["draw"]), "frame_ms": median(gaps),
                         "frame_p95_ms": gaps[int(0.95 * (len(gaps) - 1))]}
    return results


def wait_new_src(page, old: str) -> str:
    page.wait_for_function(
        "old => { const i = document.querySelector('#plane-axial img'); return i && i.src && i.src !== old "
        "&& i.complete && i.naturalWidth > 0; }", arg=old, timeout=120_000, polling=50)
    return page.locator("#plane-axial img").get_attribute("src")


def measure_png(page, nz: int, changes: int) -> dict:
    start = time.perf_counter()
    page.click("#open-png")
    src = wait_new_src(page, "")
    first = time.perf_counter() - start
    slider = page.locator("#slider-axial input[type=range]")
    times = []
    for i in range(changes):
        start = time.perf_counter()
        slider.fill(str((nz // 2 + 7 * (i + 1)) % nz))
        src = wait_new_src(page, src)
        times.append(time.perf_counter() - start)
    return {"first": first, "slice_ms": 1000 * median(times)}


def run(shape, scrolls: int, changes: int, max_side: int) -> tuple[dict, dict]:
    import socket

    from playwright.sync_api import sync_playwright

    from engine.volume import Volume

    volume = Volume(hu=chest_volume(shape), spacing_mm=SPACING)
    print(f"  volume made: {'x'.join(map(str, shape))}", flush=True)
    app, timings = bench_page(volume, max_side)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    profile = tempfile.mkdtemp(prefix="rad3d-bench-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                           headless=True, viewport={"width": 1500, "height": 1100})
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(CANVAS)
            print("  page open", flush=True)
            webgl = measure_webgl(page, timings, scrolls)
            png = measure_png(page, shape[2], changes)
            print(f"  PNG: {png}", flush=True)
            renderer = page.evaluate("sel => { const gl = document.querySelector(sel).rad3d.nv.gl;"
                                     " const d = gl.getExtension('WEBGL_debug_renderer_info');"
                                     " return d ? gl.getParameter(d.UNMASKED_RENDERER_WEBGL) : 'unknown'; }", CANVAS)
            context.close()
    finally:
        app.close()
        shutil.rmtree(profile, ignore_errors=True)
    webgl["renderer"] = renderer
    return webgl, png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--scrolls", type=int, default=20)
    parser.add_argument("--slice-changes", type=int, default=10)
    parser.add_argument("--max-side", type=int, default=420, help="PNG planes' size (the app's default)")
    args = parser.parse_args()
    webgl, png = run(tuple(args.shape), args.scrolls, args.slice_changes, args.max_side)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"WebGL renderer: {webgl['renderer']}")
    print(f"volume: {'x'.join(map(str, args.shape))} voxels (int16 in the file), loopback")
    print(f"WebGL first render: {webgl['first']:6.2f} s  (of which the server writing the .nii.gz: "
          f"{webgl['write']:.2f} s; target <= 2 s)")
    print(f"WebGL first render, file already written: {webgl['cached']:6.2f} s")
    for name in ("3 planes", "3 planes + 3D"):
        r = webgl[name]
        print(f"WebGL scrolling, {name}: one wheel step drawn in {r['draw_ms']:.1f} ms (GPU finished); one step "
              f"per animation frame: {r['frame_ms']:.1f} ms per frame median, {r['frame_p95_ms']:.1f} ms p95; "
              "no server call")
    print(f"PNG first render: {png['first']:6.2f} s; slice change (server redraw + transfer): "
          f"{png['slice_ms']:.0f} ms median of {args.slice_changes}")


if __name__ == "__main__":
    main()
