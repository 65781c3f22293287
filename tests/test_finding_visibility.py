"""engine.synth.visibility: the measurement behind `rad3d finding-visibility`."""

import numpy as np
import pytest

from engine.model_configs import PreprocessConfig
from engine.synth.visibility import changed_voxels, measure_case, summarise, to_hu

GRID = PreprocessConfig(spacing_mm=(7.5, 7.5, 15.0), shape_xyz=(48, 48, 24), hu_range=(-1000.0, 3000.0))


def test_changed_voxels_counts_only_changes_above_the_noise():
    base = np.zeros((6, 6, 6), np.float32)
    other = base.copy()
    other[0, 0, :3] = [5.0, 20.0, -300.0]  # 5 HU is under the noise SD of 10
    n, peak, mean = changed_voxels(other, base, noise_sd=10.0)
    assert (n, peak, mean) == (2, 300.0, 160.0)
    assert changed_voxels(base, base, 10.0) == (0, 0.0, 0.0)


def test_to_hu_inverts_the_plain_channel():
    assert to_hu(np.array([-1.0, 0.0, 1.0]), GRID).tolist() == [-1000.0, 1000.0, 3000.0]


def test_a_large_finding_survives_and_a_small_one_fills_fewer_voxels():
    pleural = measure_case("pleural effusion", 3, GRID, scale=8.0)
    calcium = measure_case("coronary artery wall calcification", 3, GRID, scale=8.0)
    assert pleural.noise_sd_hu > 0 and pleural.changed_grid > 100 and pleural.peak_hu > 500
    # a few 4-6 mm calcium spheres: far fewer voxels of the coarse grid, and each diluted by partial volume
    assert 0 <= calcium.changed_grid < pleural.changed_grid / 10
    assert calcium.peak_hu < 1100 and calcium.smallest_part_mm <= calcium.size_mm
    summary = summarise([pleural, calcium], GRID, patch_voxels=100)
    assert summary["Pleural effusion"]["changed_grid"] == [pleural.changed_grid] * 3
    assert summary["Pleural effusion"]["patch_fraction"] == pytest.approx(pleural.changed_grid / 100, abs=1e-3)


def test_command_writes_the_table_and_json(tmp_path, capsys, monkeypatch):
    import json

    import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ["training.commands.finding_visibility"])  # this command only
    assert cli.main(["finding-visibility", "--cases", "0"]) == 1
    assert "--cases must be at least 1" in capsys.readouterr().err
    out = tmp_path / "v.json"
    assert cli.main(["finding-visibility", "--cases", "1", "--scale", "8", "--findings", "lung_nodule",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["patch_mm"] == [45.0, 45.0, 60.0] and list(data["summary"]) == ["Lung nodule"]
    assert data["cases"][0]["changed_grid"] > 0
    assert "| Lung nodule |" in capsys.readouterr().out
