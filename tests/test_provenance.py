"""Provenance: what a cache, image model and run were made from, the licence that follows, and
that `rad3d report` and the Review tab show it; artefacts older than provenance still load."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from engine import provenance as prov
from engine.provenance import (
    CC_BY_NC_SA,
    CT_RATE,
    OTHER,
    PHANTOMS,
    DataSource,
    DecoderRecord,
    EncoderRecord,
    Provenance,
    card_licence,
    dataset_fingerprint,
    describe_dataset,
    describe_decoder,
    describe_encoder,
    file_sha256,
)
from run_fixtures import chest_like_volume, write_tiny_run


def _flat_dataset(root, *, names=("train_1_a_1.nii.gz", "train_2_a_1.nii.gz"), truth=None):
    """A dataset folder with CSVs and stub volume files (only names and sizes matter here)."""
    (root / "volumes" / "sub").mkdir(parents=True)
    rows = "\n".join(f"{n},Finding {i}.,Not given." for i, n in enumerate(names))
    (root / "reports.csv").write_text("VolumeName,Findings_EN,Impressions_EN\n" + rows + "\n")
    (root / "labels.csv").write_text("VolumeName,Emphysema\n" + "\n".join(f"{n},0" for n in names) + "\n")
    for i, n in enumerate(names):
        (root / "volumes" / "sub" / n).write_bytes(b"\x00" * (100 + i))
    if truth is not None:
        (root / "phantom_truth.json").write_text(json.dumps(truth))
    return root


PHANTOM_TRUTH = {"generator": "rad3d synth", "version": "1", "seed": 3, "n_planned": 2, "scale": 8.0}


def _phantom_provenance() -> Provenance:
    return Provenance(
        (prov.phantom_source("1", 3, 2, 8.0, "0123456789abcdef"),),
        EncoderRecord("encoder.safetensors", "ab" * 32, "rad3d train-encoder", "Apache-2.0"),
        DecoderRecord("SmolLM2-135M-Instruct", "Apache-2.0"),
    )


def test_provenance_round_trips_json_and_an_empty_one_reads_unknown():
    p = _phantom_provenance().merged(data=DataSource(CT_RATE, CT_RATE, "v2", "feedfacefeedface", CC_BY_NC_SA))
    doc = json.loads(json.dumps(p.to_dict()))
    assert Provenance.from_dict(doc) == p
    assert Provenance.from_dict(doc).to_dict() == doc
    # The derived statements travel in the JSON for its other readers.
    assert doc["trained_on"] == p.trained_on() and doc["licence"] == p.licence_statement()
    assert doc["commercial_use"] is False and doc["share_alike"] is True
    for old in (None, {}):
        empty = Provenance.from_dict(old)
        assert empty == Provenance() and not empty.known
        assert "unknown" in empty.trained_on() and "not recorded" in empty.warning()


def test_licence_terms_follow_the_most_restrictive_part():
    phantoms = _phantom_provenance()
    assert phantoms.synthetic_only and "not real CT" in phantoms.trained_on()
    assert phantoms.terms() == {"commercial_use": True, "share_alike": False}
    assert "phantoms only" in phantoms.warning()

    ctclip = EncoderRecord("CT-CLIP_v2.pt", "00" * 32, "CT-CLIP", CC_BY_NC_SA)
    real = Provenance((DataSource(CT_RATE, CT_RATE, None, "x", CC_BY_NC_SA),), ctclip,
                      DecoderRecord("SmolLM2-135M-Instruct", "apache-2.0"))
    statement = real.licence_statement()
    assert statement.startswith("non-commercial use only, share-alike")
    assert "CC BY-NC-SA 4.0: data CT-RATE (real chest CT), encoder CT-CLIP" in statement
    assert "Apache-2.0: decoder SmolLM2-135M-Instruct" in statement
    assert real.warning() is None and not real.synthetic_only

    # Phantoms through a CT-CLIP encoder: still phantoms-only for the head and connector, and the
    # encoder's licence makes the whole non-commercial.
    mixed = dataclass_replace(phantoms, encoder=ctclip)
    assert mixed.synthetic_only and "CT-CLIP (pretrained on CT-RATE)" in mixed.trained_on()
    assert mixed.terms() == {"commercial_use": False, "share_alike": True}

    unknown = dataclass_replace(phantoms, decoder=DecoderRecord("tiny-gpt2"))
    assert unknown.terms() == {"commercial_use": None, "share_alike": None}
    assert "unknown for decoder tiny-gpt2: check before use" in unknown.licence_statement()


def dataclass_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_fingerprint_changes_with_a_csv_or_a_volume_file_and_not_otherwise(tmp_path):
    data = _flat_dataset(tmp_path / "data")
    first = dataset_fingerprint(data)
    assert dataset_fingerprint(data) == first
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    assert dataset_fingerprint(moved) == first  # relative paths: a moved dataset is the same dataset

    reports = data / "reports.csv"
    original = reports.read_text()
    reports.write_text(original.replace("Finding 1.", "Finding 2."))  # same size, other contents
    assert dataset_fingerprint(data) != first
    reports.write_text(original)
    assert dataset_fingerprint(data) == first

    volume = data / "volumes" / "sub" / "train_1_a_1.nii.gz"
    volume.write_bytes(b"\x00" * 5)  # another file (size) under the same name
    assert dataset_fingerprint(data) != first
    volume.write_bytes(b"\x00" * 100)
    (data / "volumes" / "sub" / "train_3_a_1.nii.gz").write_bytes(b"\x00")
    assert dataset_fingerprint(data) != first


def test_datasets_are_recognised_from_their_contents(tmp_path):
    phantoms = describe_dataset(_flat_dataset(tmp_path / "phantoms", truth=PHANTOM_TRUTH))
    assert (phantoms.kind, phantoms.version, phantoms.licence) == (PHANTOMS, "1", "Apache-2.0")
    assert phantoms.name == "rad3d synth phantoms (seed 3, 2 cases, scale 8.0)"
    assert phantoms.fingerprint == dataset_fingerprint(tmp_path / "phantoms")

    # CT-RATE as released (the root above dataset/): its file names say what it is.
    release = tmp_path / "ct-rate"
    for rel in ("dataset/radiology_text_reports/validation_reports.csv",
                "dataset/multi_abnormality_labels/valid_predicted_labels.csv"):
        (release / rel).parent.mkdir(parents=True, exist_ok=True)
        (release / rel).write_text("VolumeName\nvalid_1_a_1.nii.gz\n")
    (release / "dataset/valid/valid_1/valid_1_a").mkdir(parents=True)
    (release / "dataset/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz").write_bytes(b"\x00" * 10)
    ctrate = describe_dataset(release)
    assert (ctrate.kind, ctrate.licence) == (CT_RATE, CC_BY_NC_SA)
    assert describe_dataset(release / "dataset").kind == CT_RATE
    # CT-RATE volumes in the flat layout (named train_/valid_<patient>_<scan>_<recon>) are CT-RATE too.
    assert describe_dataset(_flat_dataset(tmp_path / "flat")).kind == CT_RATE

    own = _flat_dataset(tmp_path / "own", names=("case_a.nii.gz", "case_b.nii.gz"))
    assert (describe_dataset(own).kind, describe_dataset(own).licence) == (OTHER, "unknown")
    (own / "README.md").write_text("---\nlicense: cc-by-4.0\npretty_name: ours\n---\n# Our scans\n")
    described = describe_dataset(own)
    assert (described.name, described.licence) == ("own", "cc-by-4.0")


def test_decoder_and_encoder_licences_are_read_from_their_files(tmp_path):
    model = tmp_path / "smollm2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert describe_decoder(model) == DecoderRecord("smollm2", "unknown")
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "license": "mit"}))
    assert card_licence(model) == "mit"
    (model / "README.md").write_text("---\nlicense: apache-2.0\n---\ntext\n")  # the card wins
    assert describe_decoder(model).licence == "apache-2.0"
    (model / "README.md").write_text("---\nlicense: [unclosed\n---\n")  # a broken card states nothing
    assert card_licence(model) == "mit"

    checkpoint = tmp_path / "CT-CLIP_v2.pt"
    checkpoint.write_bytes(b"weights")
    record = describe_encoder(checkpoint)
    assert (record.origin, record.licence) == ("CT-CLIP", CC_BY_NC_SA)
    assert record.sha256 == hashlib.sha256(b"weights").hexdigest()
    other = tmp_path / "encoder.safetensors"
    other.write_bytes(b"other")
    assert (describe_encoder(other).origin, describe_encoder(other).licence) == ("unknown", "unknown")


def test_checkpoint_hash_is_computed_once_per_file_version(tmp_path, monkeypatch):
    monkeypatch.setenv("RAD3D_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(prov, "PERSIST_BYTES", 0)  # treat the small test file as a big checkpoint
    monkeypatch.setattr(prov, "_memo", {})
    path = tmp_path / "big.pt"
    path.write_bytes(np.arange(300_000, dtype=np.int64).tobytes())
    calls = []
    real_hash = prov.sha256_of_file
    monkeypatch.setattr(prov, "sha256_of_file", lambda p, *a: calls.append(p) or real_hash(p, *a))

    digest = file_sha256(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() and len(calls) == 1
    assert file_sha256(path) == digest and len(calls) == 1  # this process remembers
    monkeypatch.setattr(prov, "_memo", {})  # a new process: the store in RAD3D_HOME remembers
    assert file_sha256(path) == digest and len(calls) == 1
    assert json.loads((tmp_path / "home" / prov.HASHES_FILE).read_text())[str(path.resolve())]["sha256"] == digest

    path.write_bytes(path.read_bytes()[:-8] + b"changed!")  # same size, new contents and mtime
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = file_sha256(path)
    assert changed == hashlib.sha256(path.read_bytes()).hexdigest() != digest and len(calls) == 2


def test_cache_records_what_it_embedded_and_an_old_cache_still_opens(tmp_path):
    from engine.cache import CacheIdentity, EmbeddingCache

    identity = CacheIdentity(encoder="ctvit:abc:def", preprocess="pp", latent_dim=4)
    first = Provenance((describe_dataset(_flat_dataset(tmp_path / "a", truth=PHANTOM_TRUTH)),),
                       EncoderRecord("encoder.safetensors", "11" * 32, "rad3d train-encoder", "Apache-2.0"))
    cache = EmbeddingCache.create_or_open(tmp_path / "cache", identity, first)
    cache.put("x", np.ones(4, np.float32))
    assert EmbeddingCache.open(tmp_path / "cache").provenance == first

    # Another dataset embedded into the same cache joins its provenance; the same one again does not.
    second = describe_dataset(_flat_dataset(tmp_path / "b", names=("case_1.nii.gz",)))
    EmbeddingCache.create_or_open(tmp_path / "cache", identity, Provenance((second,), first.encoder))
    EmbeddingCache.create_or_open(tmp_path / "cache", identity, first)
    assert EmbeddingCache.open(tmp_path / "cache").provenance.data == (first.data[0], second)

    manifest = tmp_path / "cache" / "manifest.json"
    doc = json.loads(manifest.read_text())
    del doc["provenance"]
    manifest.write_text(json.dumps(doc))
    old = EmbeddingCache.open(tmp_path / "cache")
    assert old.provenance == Provenance() and old.get("x").latent.sum() == 4


def _image_model(out, encoder_weights, notes):
    import torch

    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.labels import ct_rate
    from engine.preprocess import PreprocessConfig
    from engine.rundir import EncoderSpec
    from training.image_model_common import write_image_model

    torch.manual_seed(0)
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=32, n_labels=18))
    spec = EncoderSpec("ctvit", {}, str(encoder_weights))
    return write_image_model(out, label_set=ct_rate(), preprocess=PreprocessConfig(), encoder_spec=spec, head=head,
                             thresholds=[0.5] * 18, notes=notes)


def test_image_models_record_their_data_and_carry_their_encoders_provenance(tmp_path):
    from engine.rundir import load_image_model

    phantoms = _flat_dataset(tmp_path / "phantoms", truth=PHANTOM_TRUTH)
    image = tmp_path / "image"
    image.mkdir()
    (image / "encoder.safetensors").write_bytes(b"trained encoder")
    _image_model(image, "encoder.safetensors", {"trained_by": "rad3d train-encoder", "data": str(phantoms)})
    _, cfg = load_image_model(image)
    assert cfg.provenance.data == (describe_dataset(phantoms),) and cfg.provenance.synthetic_only
    assert cfg.provenance.encoder == EncoderRecord("encoder.safetensors", hashlib.sha256(b"trained encoder").hexdigest(),
                                                   "rad3d train-encoder", "Apache-2.0")

    # A classifier trained on other data over that encoder: both datasets, the encoder's record kept.
    other = _flat_dataset(tmp_path / "other", names=("case_1.nii.gz",))
    _image_model(tmp_path / "image2", image / "encoder.safetensors",
                 {"trained_by": "rad3d train-classifier", "data": str(other)})
    _, cfg2 = load_image_model(tmp_path / "image2")
    assert cfg2.provenance.data == (describe_dataset(phantoms), describe_dataset(other))
    assert cfg2.provenance.encoder == cfg.provenance.encoder and not cfg2.provenance.synthetic_only

    # Over a CT-CLIP checkpoint: recognised by name, and its licence follows.
    weights = tmp_path / "checkpoints" / "CT_VocabFine_v2.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"ct-clip")
    _image_model(tmp_path / "image3", weights, {"trained_by": "rad3d train-classifier", "data": str(phantoms)})
    _, cfg3 = load_image_model(tmp_path / "image3")
    assert cfg3.provenance.encoder.origin == "CT-CLIP" and cfg3.provenance.terms()["commercial_use"] is False

    # An image model written before provenance loads with an empty one.
    path = image / "image_model.json"
    doc = json.loads(path.read_text())
    del doc["provenance"]
    path.write_text(json.dumps(doc))
    assert load_image_model(image)[1].provenance == Provenance()


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory, tiny_gpt2_dir):  # noqa: F811
    """A tiny run whose provenance says it was trained on phantoms (as the demo's)."""
    return write_tiny_run(tmp_path_factory.mktemp("phantom-run"), tiny_gpt2_dir, provenance=_phantom_provenance())[0]


def test_report_prints_provenance_and_json_carries_it(tmp_path, phantom_run, capsys):
    import nibabel as nib

    import cli

    run = phantom_run
    volume = chest_like_volume(2)
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.round(volume.hu).astype(np.int16), np.diag([-3.0, -3.0, 5.0, 1.0])), path)

    assert cli.main(["report", str(path), "--run", str(run), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Provenance.from_dict(out["provenance"]) == _phantom_provenance()
    assert out["provenance"]["trained_on"] == "synthetic phantoms (rad3d synth) — not real CT"
    assert out["provenance"]["commercial_use"] is True

    assert cli.main(["report", str(path), "--run", str(run), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "Trained on: synthetic phantoms (rad3d synth) — not real CT" in text
    assert "Licence: commercial use allowed — Apache-2.0:" in text and "Warning: Trained on synthetic phantoms only" in text
    assert "[model trained on synthetic phantoms (rad3d synth) — not real CT]" in text


def test_a_run_written_without_provenance_records_its_files_and_an_old_run_loads(tmp_path, tiny_gpt2_dir):  # noqa: F811
    from engine.inference import InferenceSession
    from engine.rundir import open_run

    run = write_tiny_run(tmp_path / "run", tiny_gpt2_dir)[0]
    p = open_run(run).config.provenance
    assert not p.known and p.encoder.sha256 == file_sha256(run / "encoder.safetensors")
    assert p.decoder == DecoderRecord(tiny_gpt2_dir.name, "unknown")

    config = run / "config.json"
    doc = json.loads(config.read_text())
    del doc["provenance"]
    config.write_text(json.dumps(doc))
    session = InferenceSession.load(run, device="cpu")
    assert session.provenance == Provenance()
    assert session.report(chest_like_volume(0)).report is not None


def test_review_tab_shows_the_runs_provenance_and_warns_for_phantoms(tmp_path, phantom_run):
    from types import SimpleNamespace

    from ui.screens.common import provenance_html
    from ui.screens.review_tab import run_provenance_html

    banner = provenance_html(_phantom_provenance())
    assert "Trained on synthetic phantoms only" in banner and "⚠" in banner and "#fde8e8" in banner
    real = Provenance((DataSource(CT_RATE, CT_RATE, None, "x", CC_BY_NC_SA),))
    line = provenance_html(real)
    assert "Trained on: CT-RATE (real chest CT)" in line and "non-commercial" in line and "⚠" not in line

    config = SimpleNamespace(runs={"demo": phantom_run, "gone": tmp_path / "missing"})
    assert run_provenance_html(config, "demo") == banner
    assert "no such run directory" in run_provenance_html(config, "gone")
    assert run_provenance_html(config, None) == ""


def test_a_trained_run_carries_its_image_models_provenance_and_adds_its_data_and_decoder(
        tmp_path, training_setup, tiny_gpt2_dir, one_thread):  # noqa: F811
    from engine.rundir import IMAGE_MODEL_FILE, open_run
    from training.connector_recipe import train_connector
    from training_fixtures import train_config

    image = tmp_path / "image"
    shutil.copytree(training_setup["image"], image)
    doc = json.loads((image / IMAGE_MODEL_FILE).read_text())
    doc["provenance"] = dataclass_replace(_phantom_provenance(), decoder=None).to_dict()  # an image model's
    (image / IMAGE_MODEL_FILE).write_text(json.dumps(doc))

    config = train_config({**training_setup, "image": image}, tiny_gpt2_dir, tmp_path / "run", max_steps=1)
    assert train_connector(config, progress=False).finished
    p = open_run(tmp_path / "run").config.provenance
    phantom_image = _phantom_provenance()
    assert p.data == (phantom_image.data[0], describe_dataset(training_setup["data"]))
    assert p.encoder == phantom_image.encoder and p.decoder == DecoderRecord(tiny_gpt2_dir.name, "unknown")
    assert not p.synthetic_only and p.trained_on() == "synthetic phantoms (rad3d synth), data"
