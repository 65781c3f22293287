"""The demo's shipped weights: exported from a finished build in bf16 with a manifest, installed into
a fresh demo home by a plain copy, and loadable there as a working run."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import CheckpointError, ConfigError
from run_fixtures import chest_like_volume
from training.demo.build import DemoPaths, DemoRecipe, build_demo
from training.demo.shipped import export_demo, install_shipped, shipped_for
from training.encoder_recipe import unused_by_latent


@pytest.fixture
def finished_home(tmp_path, training_setup, trained_v3_run, tiny_gpt2_dir):  # noqa: F811
    """A demo home laid out as `rad3d demo build --from-scratch` leaves it (tiny models)."""
    paths = DemoPaths(tmp_path / "built")
    shutil.copytree(training_setup["image"], paths.image)
    for name in ("classifier_report.md", "classifier_report.csv"):
        (paths.image / name).write_text("finding,AUROC\n")
    for variant in ("v3", "v2"):
        shutil.copytree(trained_v3_run, paths.run(variant), ignore=shutil.ignore_patterns("checkpoints"))
    return paths


def test_export_then_install_gives_a_working_run_with_bf16_rounded_weights(
        finished_home, tmp_path, tiny_gpt2_dir, one_thread):  # noqa: F811
    from engine.inference import InferenceSession

    recipe = DemoRecipe(cases=10)
    evaluation = finished_home.evaluation  # as `rad3d demo evaluate` leaves it (the files the app reads)
    for rel in ("comparison.json", "comparison.md", "v3/metrics.json", "v3/per_case.csv", "v2/metrics.json",
                "v2/per_case.csv", "v3/predictions.csv"):
        (evaluation / rel).parent.mkdir(parents=True, exist_ok=True)
        (evaluation / rel).write_text(f"{rel}\n")
    shipped = export_demo(finished_home, recipe, ("v3", "v2"), tmp_path / "weights")
    manifest = shipped_for(recipe, shipped)
    assert manifest is not None and shipped_for(dataclasses.replace(recipe, cases=11), shipped) is None
    assert "eval/comparison.json" in manifest["files"] and "eval/v3/predictions.csv" not in manifest["files"]
    original = load_file(str(finished_home.run("v3") / "connector.safetensors"))
    stored = load_file(str(shipped / "runs" / "v3" / "connector.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in stored.values())
    assert sum(f.stat().st_size for f in shipped.rglob("*.safetensors")) < sum(
        f.stat().st_size for f in finished_home.root.rglob("*.safetensors"))

    home = DemoPaths(tmp_path / "fresh")
    shutil.copytree(tiny_gpt2_dir, home.decoder)  # the decoder the build converts, at the demo layout's place
    runs = install_shipped(home, manifest, shipped)
    assert set(runs) == {"v3", "v2"}
    for rel in ("comparison.json", "v3/metrics.json", "v2/per_case.csv"):  # the Research tab's default, installed
        assert (home.evaluation / rel).read_text() == (evaluation / rel).read_text()
    session = InferenceSession.load(runs["v3"], device="cpu")
    for name, tensor in session.generator.connector.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, original[name].to(torch.bfloat16).float())
    enc_original = load_file(str(finished_home.image / "encoder.safetensors"))
    for name, tensor in session.encoder.state_dict().items():
        want = torch.zeros_like(tensor) if unused_by_latent(name) else enc_original[name].to(torch.bfloat16).float()
        assert torch.equal(tensor, want), name
    case = session.report(chest_like_volume(1))
    assert len(case.probabilities) == 18 and case.n_tokens > 0

    # A home holding another build is refused, and nothing of it is overwritten.
    mixed = DemoPaths(tmp_path / "mixed")
    shutil.copytree(finished_home.image, mixed.image)
    before = (mixed.image / "encoder.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="holds another build"):
        install_shipped(mixed, manifest, shipped)
    assert (mixed.image / "encoder.safetensors").read_bytes() == before and not mixed.run("v3").exists()
    # Installing again over a finished install is a no-op.
    assert install_shipped(home, manifest, shipped) == runs

    # A corrupted shipped file is refused by name, before anything is copied.
    (shipped / "runs" / "v2" / "connector.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="does not match its manifest"):
        install_shipped(DemoPaths(tmp_path / "other"), manifest, shipped)
    assert not (tmp_path / "other").exists()


def test_a_from_scratch_build_refuses_a_home_holding_shipped_weights(finished_home, tmp_path, tiny_gpt2_dir,
                                                                    monkeypatch):  # noqa: F811
    recipe = DemoRecipe(cases=10)
    shipped = export_demo(finished_home, recipe, ("v3", "v2"), tmp_path / "weights")
    home = DemoPaths(tmp_path / "fresh")
    install_shipped(home, json.loads((shipped / "manifest.json").read_text()), shipped)
    monkeypatch.setattr("training.demo.smollm2.ensure_smollm2", lambda out: out)
    with pytest.raises(ConfigError, match="holds the shipped weights"):
        build_demo(home.home, recipe, from_scratch=True, progress=False, say=lambda s: None)
    # A finished from-scratch home is used as it is by a plain build (the shipped weights are not mixed in).
    monkeypatch.setattr("training.demo.shipped.SHIPPED_DIR", shipped)
    monkeypatch.setattr("training.demo.shipped.shipped_for", lambda r, folder=shipped: json.loads(
        (shipped / "manifest.json").read_text()))
    said = []
    runs = build_demo(finished_home.home, recipe, progress=False, say=said.append)
    assert runs == {"v3": finished_home.run("v3"), "v2": finished_home.run("v2")}
    assert any("finished build of its own" in line for line in said)


def test_installing_the_shipped_demo_records_phantoms_and_smollm2(tmp_path):
    """The weights in the repository were exported before provenance was kept: installing them
    records what they were made from, and homes installed earlier are brought up to date."""
    from engine.provenance import DecoderRecord, file_sha256
    from engine.rundir import load_image_model, open_run
    from training.demo.shipped import SHIPPED_DIR, read_manifest

    manifest = read_manifest()
    home = DemoPaths(tmp_path / "home")
    runs = install_shipped(home, manifest)
    assert set(runs) == set(manifest["variants"])
    for run in runs.values():
        p = open_run(run, check=False).config.provenance
        assert p.synthetic_only and "not real CT" in p.trained_on()
        assert p.decoder == DecoderRecord("SmolLM2-135M-Instruct", "Apache-2.0")
        assert p.encoder.sha256 == file_sha256(home.image / "encoder.safetensors")
        assert p.terms() == {"commercial_use": True, "share_alike": False}
    assert load_image_model(home.image)[1].provenance.synthetic_only

    config = runs["v3"] / "config.json"
    stamped = config.read_bytes()
    assert install_shipped(home, manifest) == runs and config.read_bytes() == stamped
    shutil.copyfile(SHIPPED_DIR / "runs" / "v3" / "config.json", config)  # as an earlier install left it
    assert install_shipped(home, manifest) == runs and config.read_bytes() == stamped
    config.write_text(stamped.decode().replace('"v3"', '"v2"', 1))  # a config of another build
    with pytest.raises(ConfigError, match="holds another build"):
        install_shipped(home, manifest)


def test_the_repository_ships_weights_for_the_default_recipe():
    # The manifest stores the recipe (its `connector` settings included) and the build installs the
    # shipped weights only when it matches DemoRecipe() exactly; a renamed recipe field would
    # silently send every first start to a from-scratch build.
    from training.demo.shipped import SHIPPED_DIR

    assert shipped_for(DemoRecipe(), SHIPPED_DIR) is not None
    assert shipped_for(dataclasses.replace(DemoRecipe(), connector={}), SHIPPED_DIR) is None


def test_the_evaluation_of_the_installed_shipped_weights_ships_beside_them(tmp_path):
    """`rad3d demo evaluate --ship`: the evaluation of a home installed from the shipped weights is added to
    the shipped folder and its manifest (no weights record changes) and installs with them; a home whose
    weights differ from the shipped ones is refused."""
    from training.demo.shipped import SHIPPED_DIR, read_manifest, ship_evaluation

    shipped = tmp_path / "weights"
    shutil.copytree(SHIPPED_DIR, shipped, ignore=shutil.ignore_patterns("eval"))
    manifest = read_manifest(shipped)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("eval/")}
    (shipped / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    home = DemoPaths(tmp_path / "home")
    install_shipped(home, manifest, shipped)
    for rel in ("comparison.json", "comparison.md", "v3/metrics.json", "v2/metrics.json", "v2/per_case.csv"):
        (home.evaluation / rel).parent.mkdir(parents=True, exist_ok=True)
        (home.evaluation / rel).write_text(f"{rel}\n")

    added = ship_evaluation(home, ("v3", "v2"), shipped)
    after = read_manifest(shipped)
    assert set(added) == {f"eval/{r}" for r in ("comparison.json", "comparison.md", "v3/metrics.json",
                                                 "v2/metrics.json", "v2/per_case.csv")}
    assert {k: v for k, v in after["files"].items() if not k.startswith("eval/")} == manifest["files"]
    fresh = DemoPaths(tmp_path / "fresh")
    install_shipped(fresh, after, shipped)
    assert (fresh.evaluation / "v3" / "metrics.json").read_text() == "v3/metrics.json\n"

    connector = home.run("v2") / "connector.safetensors"
    connector.write_bytes(connector.read_bytes()[:-8] + b"\0" * 8)  # weights that are not the shipped ones
    with pytest.raises(CheckpointError, match="not the shipped ones"):
        ship_evaluation(home, ("v3", "v2"), shipped)
