"""The small shared pieces: label sets, the registry, typed errors and the CLI entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cli
from engine.errors import ConfigError, DatasetError, Rad3dError, VolumeError
from engine.labels import LabelSet, builtin_label_sets, ct_rate, load_label_set
from engine.registry import Registry

REPO = Path(__file__).resolve().parents[1]

CT_RATE_ORDER = [
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
    "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
]


def test_ct_rate_label_set_has_the_18_columns_in_dataset_order():
    labels = ct_rate()
    assert list(labels.names) == CT_RATE_ORDER
    assert "ct-rate" in builtin_label_sets()
    assert all(labels.synonyms[n] for n in labels.names), "every finding needs extractor synonyms"


def test_label_set_from_user_file_round_trips(tmp_path):
    own = LabelSet("mine", ("Pulmonary embolism", "Pleural effusion"), {"Pulmonary embolism": ("PE",)})
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(own.to_dict()))
    loaded = load_label_set(path)
    assert loaded == LabelSet("mine", ("Pulmonary embolism", "Pleural effusion"),
                              {"Pulmonary embolism": ("PE",), "Pleural effusion": ()})
    assert loaded.index("Pleural effusion") == 1


def test_bad_label_sets_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no label set"):
        load_label_set("inspect-99")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(ConfigError, match=str(bad)):
        load_label_set(bad)
    with pytest.raises(ConfigError, match="repeats"):
        LabelSet("dup", ("A", "A"))


def test_registry_builds_by_name_and_lists_known_names_on_error():
    reg: Registry[dict] = Registry("connector")

    @reg.register("linear")
    def make(width=1):
        return {"width": width}

    assert reg.build("linear", width=3) == {"width": 3}
    assert "linear" in reg and reg.names() == ["linear"]
    with pytest.raises(ConfigError, match=r"unknown connector 'mlp' \(known: linear\)"):
        reg.get("mlp")
    with pytest.raises(ValueError):
        reg.register("linear")(make)


def test_errors_name_the_file_and_collect_problems():
    err = VolumeError("contains NaN voxels", "/data/a.nii.gz")
    assert str(err) == "/data/a.nii.gz: contains NaN voxels"
    assert isinstance(err, Rad3dError)
    many = DatasetError("3 bad rows", "labels.csv", problems=[f"row {i}" for i in range(25)])
    assert "row 0" in str(many) and "(and 5 more)" in str(many) and len(many.problems) == 25


def test_cli_help_lists_commands_and_each_subcommand_has_help():
    parser = cli.build_parser()
    top = parser.format_help()
    sub_action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sub_action.choices, "rad3d has no subcommands"
    for name, sub in sub_action.choices.items():
        assert name in top
        assert sub.format_help().startswith("usage: rad3d " + name)


def test_cli_reports_errors_in_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "scan", str(tmp_path / "missing")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rad3d scan: error:") and "missing" in lines[0]
