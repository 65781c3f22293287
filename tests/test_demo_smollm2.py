"""The demo decoder is a real pretrained LLM shipped by a registry package: converted once, it
loads offline from a local folder and continues text sensibly."""

import pytest
import torch

from engine.decoders import load_causal_lm
from engine.errors import ConfigError
from training.demo.smollm2 import ensure_smollm2, package_folder


def test_missing_package_is_named():
    with pytest.raises(ConfigError, match="not installed"):
        package_folder("no_such_package_rad3d")


@pytest.mark.slow
def test_smollm2_converts_once_and_generates(smollm2_dir):  # noqa: F811
    out = smollm2_dir  # converted by the fixture, shared with tests/test_greedy_reference.py
    assert (out / "config.json").is_file() and not out.with_name("smollm2.partial").exists()
    stamp = (out / "config.json").stat().st_mtime_ns
    assert ensure_smollm2(out) == out and (out / "config.json").stat().st_mtime_ns == stamp
    from engine.provenance import describe_decoder

    assert describe_decoder(out).licence == "apache-2.0"  # its model card, which runs made on it record
    model, tokenizer = load_causal_lm(out)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out_ids = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out_ids[0, ids["input_ids"].shape[1]:])


def test_the_converted_decoder_states_its_licence(tmp_path, monkeypatch):
    import training.demo.smollm2 as smollm2
    from engine.provenance import DecoderRecord, describe_decoder, licence_name

    monkeypatch.setattr(smollm2, "package_folder", lambda package: tmp_path)
    monkeypatch.setattr(smollm2, "convert_gguf", lambda folder, gguf, out: out.mkdir(parents=True) or out)
    out = smollm2.ensure_smollm2(tmp_path / "smollm2")
    assert describe_decoder(out) == DecoderRecord("smollm2", "apache-2.0")
    assert licence_name(describe_decoder(out).licence) == "Apache-2.0"
