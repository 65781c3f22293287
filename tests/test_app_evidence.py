"""The Review tab's evidence overlay and "jump to evidence", through the app's own Gradio handlers
(called as Gradio calls them) on a phantom and the tiny test run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

FINDING = "Pleural effusion"


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    return write_dataset(SynthConfig(n=1, seed=0, scale=8.0), tmp_path_factory.mktemp("evidence") / "data",
                         progress=False)


def _handler(app, name):
    return next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == name)


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _tinted(path, plain_path) -> int:
    """Pixels the overlay changed, each warmer than before (red up or blue down: the heat colours)."""
    a, b = _rgb(path), _rgb(plain_path)
    changed = np.abs(a - b).sum(-1) > 6
    assert ((a[changed, 0] - b[changed, 0]) >= (a[changed, 2] - b[changed, 2])).all()
    return int(changed.sum())


def test_overlay_appears_and_jump_moves_to_the_peak(phantom_data, tiny_run, tmp_path, monkeypatch):  # noqa: F811
    from engine.data.ctrate import CTRateDataset
    from engine.evidence_cache import evidence_for
    from engine.image_model import open_image_model
    from ui.app import AppConfig, build_app

    monkeypatch.setenv("RAD3D_HOME", str(tmp_path / "home"))
    torch.set_num_threads(1)  # tiny passes; two threads only stall each other on a shared CPU
    app = build_app(AppConfig(data_dir=phantom_data, runs={"tiny": tiny_run[0]}, upload_dir=tmp_path / "uploads"))
    on_view, on_show, on_jump = (_handler(app, n) for n in ("on_view", "on_show", "on_jump"))
    name = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "case-select").value
    request, quiet = SimpleNamespace(session_hash="s"), (lambda *a, **k: None)
    centre = (20, 20, 8)

    plain = on_view(name, *centre, 1500, -600, "tiny", "", 0.8, request=request)
    shown = on_show(name, "tiny", FINDING, *centre, 1500, -600, 0.8, request=request, progress=quiet)
    assert shown[3] == FINDING and "peak at voxel" in shown[4]
    assert sum(_tinted(p, q) for p, q in zip(shown[:3], plain)) > 50
    faint = on_view(name, *centre, 1500, -600, "tiny", FINDING, 0.0, request=request)
    assert all((_rgb(p) == _rgb(q)).all() for p, q in zip(faint, plain))  # opacity 0: invisible

    jumped = on_jump(name, "tiny", FINDING, 1500, -600, 0.8, request=request, progress=quiet)
    peak = tuple(jumped[3:6])
    # Independently: the run's image model on the case's volume, no cache.
    volume = CTRateDataset.open(phantom_data).load_volume(name)
    expected = evidence_for(open_image_model(tiny_run[0]), volume, FINDING)
    assert peak == expected.peak
    assert jumped[6] == FINDING and f"axial slice {peak[2]}" in jumped[7]
    assert list((tmp_path / "home" / "evidence").rglob("*.npz"))  # cached per case on disk

    with pytest.raises(Exception, match="Choose a run"):
        on_show(name, "(no run)", FINDING, *centre, 1500, -600, 0.8, request=request, progress=quiet)


def test_evidence_command_writes_the_map_and_reads_it_back_from_the_cache(tiny_run, tmp_path, capsys):  # noqa: F811
    import nibabel as nib

    import cli
    from run_fixtures import chest_like_volume

    volume = chest_like_volume(4)
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(volume.hu, np.diag([-3.0, -3.0, 5.0, 1.0])), str(path))  # L, P, S as stored
    common = [str(path), "--run", str(tiny_run[0]), "--cache", str(tmp_path / "cache")]
    assert cli.main(["evidence", *common, "--finding", "Pleural effusions"]) == 1
    assert "unknown finding 'Pleural effusions'" in capsys.readouterr().err
    assert cli.main(["evidence", *common, "--finding", FINDING, "--out", str(tmp_path / "map.nii.gz")]) == 0
    first = capsys.readouterr().out
    saved = np.asarray(nib.load(str(tmp_path / "map.nii.gz")).dataobj)
    assert saved.shape == volume.shape and saved.max() == pytest.approx(1.0, abs=1e-3)
    peak = tuple(int(v) for v in np.unravel_index(int(saved.argmax()), saved.shape))
    assert f"peak voxel (x={peak[0]}, y={peak[1]}, z={peak[2]})" in first and "computed" in first
    assert cli.main(["evidence", *common, "--finding", FINDING]) == 0
    assert "from the cache" in capsys.readouterr().out
