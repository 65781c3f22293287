"""The WebGL volume viewer: NiiVue (ui/static/niivue, BSD-2-Clause, its built bundle committed) in a
gr.HTML component. Three planes and a 3D render, wheel scroll, zoom, pan, window/level by drag or preset,
a linked crosshair, distance measurement, orientation letters and an overlay volume (colour map and
opacity). The volume reaches the browser once, as a gzipped NIfTI file; everything after is local.

Python side: `volume_viewer()` builds the component, `ViewerFiles.value(...)` is what a handler returns
to it (the base volume, an optional overlay on the same grid, a voxel to jump to). The component fires
`nowebgl` when the browser has no WebGL2, so a screen can fall back to the server-drawn planes.
"""

from __future__ import annotations

import html
import json
import secrets
import shutil
import tempfile
import threading
import weakref
import zlib
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np

from ui.viewer import WINDOW_PRESETS

STATIC = Path(__file__).resolve().parent / "static"
NIIVUE_JS = STATIC / "niivue" / "niivue.umd.js"
GLUE_JS = STATIC / "volume_viewer.js"
COLORMAPS = ("warm", "hot", "red", "jet", "viridis")
# "planes": the three planes without the 3D render, the default where WebGL runs in software (SwiftShader,
# llvmpipe), whose ray casting of a CT takes seconds a frame; values: NiiVue's slice types otherwise
LAYOUTS = {"3 planes + 3D": "planes3d", "3 planes": "planes", "axial": "0", "coronal": "1", "sagittal": "2",
           "3D": "4"}
DRAG_MODES = {"window/level": "contrast", "measure distance": "measurement", "pan / zoom": "pan"}


def nifti_gz(array: np.ndarray, spacing_mm: tuple[float, float, float], slope: float = 1.0) -> bytes:
    """A gzipped NIfTI-1 of a canonical (L, P, S) array: the affine says so, so NiiVue puts the letters
    right. Deflate at level 1 with run-length matching only: on CT (noise, then long runs of air) it
    compresses nearly as well as level 1's full search in about two thirds of the time."""
    sx, sy, sz = (float(s) for s in spacing_mm)
    affine = np.diag([-sx, -sy, sz, 1.0])
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_slope_inter(slope, 0.0)
    image.header.set_xyzt_units("mm")
    raw = image.to_bytes()
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)  # 16+: gzip framing
    return packer.compress(raw) + packer.flush()


def hu_int16(hu: np.ndarray) -> np.ndarray:
    """HU as int16 (CT's native precision): half the bytes of float32, nothing lost on CT."""
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


def overlay_uint8(overlay: np.ndarray) -> tuple[np.ndarray, float, tuple[float, float]]:
    """A non-negative map as uint8 with the slope that restores its scale, and its display range."""
    top = float(np.nanmax(overlay)) if overlay.size else 0.0
    slope = top / 255.0 if top > 0 else 1.0
    scaled = np.rint(np.clip(np.nan_to_num(overlay), 0, None) / slope).astype(np.uint8)
    return scaled, slope, (0.05 * top, top if top > 0 else 1.0)


class ViewerFiles:
    """The gzipped NIfTI files the viewer downloads, in one folder Gradio serves (`static_paths`):
    written once per array (kept while the array is among the last `capacity`), named by a random
    token so that only the page that was handed a case's name can fetch it."""

    def __init__(self, folder: str | Path | None = None, capacity: int = 8):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="rad3d-viewer-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        if folder is None:  # our own temporary folder goes with us (or at the latest when the process ends)
            weakref.finalize(self, shutil.rmtree, self.folder, True)
        self._capacity = capacity
        self._files: OrderedDict[int, tuple[np.ndarray, Path, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self.writes = 0  # how often a file was written (tests check a case is written once)

    def file(self, array: np.ndarray, spacing_mm, *, overlay: bool = False) -> tuple[Path, dict]:
        """(path, facts) of the array's file, written on first use; facts: the overlay's display range."""
        key = id(array)
        with self._lock:
            if key in self._files and self._files[key][0] is array:
                self._files.move_to_end(key)
                return self._files[key][1:]
        facts: dict = {}
        if overlay:
            data, slope, facts["range"] = overlay_uint8(array)
            payload = nifti_gz(data, spacing_mm, slope)
        else:
            payload = nifti_gz(hu_int16(array), spacing_mm)
        path = self.folder / f"{secrets.token_hex(16)}.nii.gz"
        path.write_bytes(payload)
        with self._lock:
            self.writes += 1
            self._files[key] = (array, path, facts)  # the array is kept so its id is not reused meanwhile
            while len(self._files) > self._capacity:
                self._files.popitem(last=False)[1][1].unlink(missing_ok=True)
        return path, facts

    def value(self, volume, name: str, *, overlay: np.ndarray | None = None, jump=None,
              window: tuple[float, float] = WINDOW_PRESETS["lung"], colormap: str = "warm",
              opacity: float = 0.5) -> str:
        """What a handler returns to the component: `volume` (an engine Volume, canonical order), an
        optional `overlay` of the same shape (e.g. a finding's evidence map, >= 0), `jump` a voxel
        (x, y, z) for the crosshair, `window` (width, level) in HU."""
        if overlay is not None and tuple(overlay.shape) != tuple(volume.hu.shape):
            raise ValueError(f"overlay shape {tuple(overlay.shape)} differs from the volume's {tuple(volume.hu.shape)}")
        if colormap not in COLORMAPS:
            raise ValueError(f"colour map {colormap!r} is not one of {', '.join(COLORMAPS)}")
        base, _ = self.file(volume.hu, volume.spacing_mm)
        value = {"name": name, "volume": file_url(base), "spacing": [float(s) for s in volume.spacing_mm],
                 "shape": list(volume.shape), "window": [float(window[0]), float(window[1])],
                 "overlay": None, "colormap": colormap, "opacity": float(opacity),
                 "jump": None if jump is None else [int(v) for v in jump]}
        if overlay is not None:
            path, facts = self.file(overlay, volume.spacing_mm, overlay=True)
            value.update(overlay=file_url(path), overlay_range=list(facts["range"]))
        return json.dumps(value)


def file_url(path: Path) -> str:
    """Gradio's route for a file under a static path (relative: works behind any root path)."""
    return f"gradio_api/file={path}"


def serve_viewer_files(files: ViewerFiles) -> ViewerFiles:
    """Let Gradio serve NiiVue's bundle and the volume files (nothing else of ui/static or the disk)."""
    gr.set_static_paths([NIIVUE_JS, files.folder])
    return files


def _template(elem_id: str, height: int) -> str:
    def options(items) -> str:
        return "".join(f'<option value="{html.escape(str(v))}">{html.escape(k)}</option>' for k, v in items)

    presets = "".join(f'<button type="button" class="rad3d-btn" data-preset="{w:g},{lv:g}" id="{elem_id}-{name}">'
                      f"{name}</button>" for name, (w, lv) in WINDOW_PRESETS.items())
    return f"""
<div class="rad3d-toolbar">
  <span>Window:</span>{presets}
  <label>Layout <select class="rad3d-layout">{options(LAYOUTS.items())}</select></label>
  <label>Right drag <select class="rad3d-drag">{options(DRAG_MODES.items())}</select></label>
  <label>Overlay <select class="rad3d-colormap">{options((c, c) for c in COLORMAPS)}</select></label>
  <input class="rad3d-opacity" type="range" min="0" max="1" step="0.05" value="0.5" title="overlay opacity">
</div>
<div class="rad3d-stage" style="height:{height}px"><canvas class="rad3d-canvas"></canvas></div>
<div class="rad3d-where"></div><div class="rad3d-state">waiting for a case</div>
<div class="rad3d-help">Wheel: slice (zoom when right drag is pan / zoom) · left click: crosshair ·
right drag: window/level, measure or pan (choose above)</div>
"""


CSS = """
.rad3d-toolbar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; font-size: 0.85rem; }
.rad3d-btn { padding: 1px 8px; border: 1px solid #888; border-radius: 4px; }
.rad3d-stage { width: 100%; background: #000; }
.rad3d-canvas { width: 100%; height: 100%; display: block; }
.rad3d-where, .rad3d-state, .rad3d-help { font-size: 0.8rem; color: #888; }
"""


def volume_viewer(elem_id: str = "webgl-viewer", height: int = 560, visible: bool = True) -> gr.HTML:
    """The component (inside a gr.Blocks). Its value is ViewerFiles.value(...)'s JSON; its `nowebgl`
    event fires once in a browser without WebGL2."""
    return gr.HTML(
        value="", html_template=_template(elem_id, height), css_template=CSS, js_on_load=GLUE_JS.read_text(),
        head=f'<script src="{file_url(NIIVUE_JS)}"></script>', elem_id=elem_id, visible=visible,
        apply_default_css=False, padding=False,
    )

