// The WebGL viewer's page side (gr.HTML's js_on_load body: `element`, `props`, `trigger`, `watch` are
// given by Gradio). NiiVue (window.niivue, loaded once by the component's <head> script) draws the three
// planes and a 3D render on one canvas; every interaction after the volume's one download is local.
// props.value is the JSON written by ui/volume_viewer.viewer_value.
(async () => {
  const canvas = element.querySelector("canvas.rad3d-canvas");
  const where = element.querySelector(".rad3d-where");
  const state = element.querySelector(".rad3d-state");
  const say = (text) => { state.textContent = text; };
  if (!window.niivue || !document.createElement("canvas").getContext("webgl2")) {
    say("WebGL2 is not available in this browser: showing the server-drawn planes instead.");
    canvas.dataset.webgl = "missing";
    trigger("nowebgl");
    return;
  }
  const N = window.niivue;
  const probe = document.createElement("canvas").getContext("webgl2");
  const info = probe.getExtension("WEBGL_debug_renderer_info");
  const renderer = info ? String(probe.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
  const software = /SwiftShader|llvmpipe|softpipe|software/i.test(renderer);
  const nv = new N.Niivue({
    isRadiologicalConvention: true,  // patient's right on the image's left, as the PNG viewer
    multiplanarShowRender: software ? N.SHOW_RENDER.NEVER : N.SHOW_RENDER.ALWAYS,
    show3Dcrosshair: true,
    isOrientationTextVisible: true,
    dragAndDropEnabled: false,
    backColor: [0, 0, 0, 1],
    crosshairColor: [1, 0.78, 0, 1],
    loadingText: "loading the volume...",
  });
  await nv.attachToCanvas(canvas);
  nv.setSliceType(nv.sliceTypeMultiplanar);
  const view = { nv, volume: null, overlay: null, draws: 0, loads: 0, renderer, software };
  canvas.rad3d = view;  // tests and the bench read NiiVue's state here
  const drawScene = nv.drawScene.bind(nv);
  nv.drawScene = () => { view.draws += 1; return drawScene(); };
  // rad3d's voxel (x, y, z) from NiiVue's, which runs along R, A, S: the file's (L, P, S) axes, x and y flipped
  const toVoxel = (v) => [view.shape[0] - 1 - v[0], view.shape[1] - 1 - v[1], v[2]];
  // and its position in mm: the file's affine is diag(-sx, -sy, sz), origin 0
  const toMM = (vox) => [-vox[0] * view.spacing[0], -vox[1] * view.spacing[1], vox[2] * view.spacing[2]];
  nv.onLocationChange = (d) => {
    const vox = toVoxel(d.vox);
    const hu = d.values && d.values.length ? d.values[0].value : null;
    where.textContent = `voxel ${vox.join(", ")}` + (hu == null ? "" : ` · ${Math.round(hu)} HU`);
    canvas.dataset.vox = vox.join(",");
  };

  const setWindow = (width, level) => {
    const base = nv.volumes[0];
    if (!base) return;
    base.cal_min = level - width / 2;
    base.cal_max = level + width / 2;
    nv.updateGLVolume();
  };
  const jump = (vox) => {  // no voxel: stay where NiiVue is (the centre of a new volume)
    if (!nv.volumes.length) return;
    if (vox) nv.scene.crosshairPos = nv.mm2frac(toMM(vox));
    nv.createOnLocationChange();
    nv.drawScene();
  };
  const overlayLook = () => {
    if (nv.volumes.length < 2) return;
    const opacity = Number(element.querySelector(".rad3d-opacity").value);
    nv.setColormap(nv.volumes[1].id, element.querySelector(".rad3d-colormap").value);
    nv.setOpacity(1, opacity);
  };

  async function show() {
    const v = props.value ? JSON.parse(props.value) : null;
    if (!v || !v.volume) return;
    try {
      if (v.volume !== view.volume) {
        say("loading the volume…");
        view.volume = v.volume;
        view.spacing = v.spacing;
        view.shape = v.shape;
        view.overlay = null;
        await nv.loadVolumes([{ url: v.volume, name: "volume.nii.gz" }]);
        view.loads += 1;
        setWindow(...v.window);
      }
      if (v.overlay !== view.overlay) {  // the same overlay again (a jump, a new opacity): not downloaded again
        while (nv.volumes.length > 1) nv.removeVolumeByIndex(nv.volumes.length - 1);
        view.overlay = v.overlay;
        if (v.overlay) {
          await nv.addVolumeFromUrl({ url: v.overlay, name: "overlay.nii.gz", cal_min: v.overlay_range[0],
                                      cal_max: v.overlay_range[1] });
          view.overlayLoads = (view.overlayLoads || 0) + 1;
        }
      }
      if (v.overlay) {  // the look the server sent (the Review tab's opacity slider) wins over the toolbar's
        if (v.colormap) element.querySelector(".rad3d-colormap").value = v.colormap;
        if (v.opacity != null) element.querySelector(".rad3d-opacity").value = v.opacity;
        overlayLook();
      }
      jump(v.jump);
      say(`ready: ${v.name}` + (v.overlay ? " with overlay" : "") +
          (software ? " · WebGL runs in software here: the 3D render is off until chosen under Layout" : ""));
      canvas.dataset.ready = v.volume + "|" + (v.overlay || "");
    } catch (err) {
      say(`cannot show the volume: ${err}`);
    }
  }

  element.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => {
    const [w, l] = b.dataset.preset.split(",").map(Number);
    setWindow(w, l);
  }));
  const setLayout = (layout) => {
    if (layout === "planes" || layout === "planes3d") {
      nv.opts.multiplanarShowRender = layout === "planes3d" ? N.SHOW_RENDER.ALWAYS : N.SHOW_RENDER.NEVER;
      nv.setSliceType(nv.sliceTypeMultiplanar);
    } else {
      nv.setSliceType(Number(layout));
    }
  };
  view.setLayout = setLayout;
  const layouts = element.querySelector(".rad3d-layout");
  layouts.value = software ? "planes" : "planes3d";
  layouts.addEventListener("change", (e) => setLayout(e.target.value));
  element.querySelector(".rad3d-drag").addEventListener("change", (e) => {
    nv.setDragMode(N.DRAG_MODE[e.target.value]);
  });
  element.querySelector(".rad3d-opacity").addEventListener("input", overlayLook);
  element.querySelector(".rad3d-colormap").addEventListener("change", overlayLook);
  watch("value", show);
  await show();
})();
