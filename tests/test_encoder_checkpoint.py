"""Loading CT-CLIP-shaped checkpoints, saving our own weights, freezing and input validation."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from engine.encoders import build_ctvit
from engine.encoders.checkpoint import load_ctclip_vision, save_encoder_weights
from engine.errors import CheckpointError, VolumeError

SMALL = "ctclip-small-fixture"  # input (B, 1, 20, 48, 48)


def _small(seed: int, **kwargs):
    torch.manual_seed(seed)
    return build_ctvit(SMALL, **kwargs)


def _volume(seed: int = 0, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 20, 48, 48, generator=g) * 2 - 1


def _ctclip_state(vision: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a CTCLIP state_dict holds: the vision keys plus a (tiny, fake) text side."""
    state = {k: v.clone() for k, v in vision.items()}
    state["text_transformer.embeddings.word_embeddings.weight"] = torch.randn(30, 16)
    state["text_transformer.embeddings.position_ids"] = torch.arange(8)[None]
    state["text_transformer.encoder.layer.0.attention.self.query.weight"] = torch.randn(16, 16)
    state["to_text_latent.weight"] = torch.randn(32, 16)
    state["to_text_latent_extra.weight"] = torch.randn(32, 16)
    state["temperature"] = torch.tensor(1.0)
    return state


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize(
    "wrapper, prefix",
    [("state_dict", "module."), ("model", ""), (None, ""), (None, "module.")],
)
def test_ctclip_checkpoint_loads_strictly(tmp_path, wrapper, prefix):
    source = _small(1)
    state = {prefix + k: v for k, v in _ctclip_state(source.state_dict()).items()}
    payload = {wrapper: state, "epoch": 3} if wrapper else state
    path = tmp_path / "CT-CLIP_v2.pt"
    torch.save(payload, path)

    target = _small(2)
    report = load_ctclip_vision(target, path, strict=True)

    _assert_same_state(source, target)
    assert report.loaded == 95
    assert report.dropped == {"text_transformer.": 3, "to_text_latent.": 1, "to_text_latent_extra.": 1,
                              "temperature": 1}
    assert report.stripped_prefix == (prefix or None)
    x = _volume()
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_mismatched_checkpoint_lists_missing_unexpected_and_shapes(tmp_path):
    state = _ctclip_state(_small(1).state_dict())
    del state["visual_transformer.enc_temporal_transformer.layers.1.1.to_q.weight"]
    state["visual_transformer.enc_temporal_transformer.layers.2.1.to_q.weight"] = torch.randn(32, 64)
    state["to_visual_latent.weight"] = torch.randn(32, 999)
    path = tmp_path / "wrong.pt"
    torch.save({"state_dict": state}, path)

    with pytest.raises(CheckpointError) as info:
        load_ctclip_vision(_small(2), path)
    message = str(info.value)
    assert "wrong.pt" in message
    assert "1 missing key(s): visual_transformer.enc_temporal_transformer.layers.1.1.to_q.weight" in message
    assert "1 unexpected key(s): visual_transformer.enc_temporal_transformer.layers.2.1.to_q.weight" in message
    assert "to_visual_latent.weight (checkpoint (32, 999), model (32, 2304))" in message

    # Non-strict: loads what fits and reports the rest.
    target = _small(2)
    report = load_ctclip_vision(target, path, strict=False)
    assert report.missing == ["visual_transformer.enc_temporal_transformer.layers.1.1.to_q.weight"]
    assert report.unexpected == ["visual_transformer.enc_temporal_transformer.layers.2.1.to_q.weight"]
    assert len(report.shape_mismatches) == 1 and report.loaded == 93
    assert torch.equal(target.state_dict()["visual_transformer.vq._codebook.embed"],
                       state["visual_transformer.vq._codebook.embed"])


def test_unreadable_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_ctclip_vision(_small(0), tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_ctclip_vision(_small(0), garbage)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_ctclip_vision(_small(0), bad_st)
    # A pickle carrying an arbitrary object is refused by weights_only loading.
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": _small(0).state_dict(), "args": argparse.Namespace(lr=1e-4)}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_ctclip_vision(_small(0), pickled)
    not_state = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_state)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_ctclip_vision(_small(0), not_state)


def test_uninitialised_codebook_is_refused(tmp_path):
    state = _small(1).state_dict()
    state["visual_transformer.vq._codebook.initted"] = torch.zeros(1)
    path = tmp_path / "untrained.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointError, match="initted"):
        load_ctclip_vision(_small(2), path)


def test_save_and_reload_encoder_weights(tmp_path):
    from safetensors import safe_open

    source = _small(1)
    path = save_encoder_weights(source, tmp_path / "enc" / "encoder.safetensors")
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["config"])["dim"] == 64
    target = _small(2)
    load_ctclip_vision(target, path, strict=True)
    _assert_same_state(source, target)

    tuned = _small(3, trainable="last_layer")
    partial = save_encoder_weights(tuned, tmp_path / "last_layer.safetensors", trainable_only=True)
    report = load_ctclip_vision(target, partial, strict=False)
    assert report.loaded == len([p for p in tuned.parameters() if p.requires_grad])
    _assert_same_state(tuned.visual_transformer.enc_temporal_transformer.layers[1].ff,
                       target.visual_transformer.enc_temporal_transformer.layers[1].ff)
    with pytest.raises(CheckpointError, match="no trainable parameters"):
        save_encoder_weights(_small(0), tmp_path / "frozen.safetensors", trainable_only=True)


def test_meta_built_encoder_is_materialised_by_loading(tmp_path):
    source = _small(1)
    path = tmp_path / "ct.pt"
    torch.save(_ctclip_state(source.state_dict()), path)
    with torch.device("meta"):
        target = build_ctvit(SMALL)
    load_ctclip_vision(target, path)
    assert not any(t.is_meta for t in target.state_dict().values())
    assert all(not p.requires_grad for p in target.parameters())
    x = _volume()
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_frozen_by_default_and_optimiser_cannot_change_it():
    model = _small(0)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.AdamW(model.parameters(), lr=1.0, weight_decay=0.5)
    latent = model(_volume())
    assert not latent.requires_grad  # nothing to backpropagate into
    optimiser.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_last_layer_option_trains_only_the_last_temporal_block():
    model = _small(0, trainable="last_layer")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    last = "visual_transformer.enc_temporal_transformer.layers.1."
    used_in_last = {
        n for n, p in model.named_parameters()
        if n.startswith(last) and p.numel() and ".context_norm." not in n
    }
    assert trainable == used_in_last | {"visual_transformer.enc_temporal_transformer.norm_out.gamma"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    latent = model(_volume(batch=2))
    latent[:, 0].sum().backward()  # gradients pass the VQ by straight-through
    optimiser.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and changed <= trainable
    assert {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} == changed


def test_vq_never_mutates_its_buffers_in_train_mode():
    model = _small(0, trainable="last_layer")
    model.train()
    codebook = model.visual_transformer.vq._codebook
    before = {k: v.clone() for k, v in codebook.state_dict().items()}
    x = _volume()
    model(x).sum().backward()
    with torch.no_grad():
        model(x)
    for k, v in codebook.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 20, 48, 48), "5 axes"),
        ((1, 2, 20, 48, 48), "got shape"),
        ((1, 1, 18, 48, 48), "multiple of temporal_patch_size 4"),
        ((1, 1, 24, 48, 48), "expects 20 slices"),
        ((1, 1, 20, 40, 48), "H x W must be 48 x 48"),
        ((1, 1, 20, 48, 56), "never crops"),
    ],
)
def test_wrong_input_shape_is_a_clear_error(shape, match):
    with pytest.raises(VolumeError, match=match):
        _small(0)(torch.zeros(shape))


def test_non_finite_or_integer_input_is_refused():
    model = _small(0)
    x = _volume()
    x[0, 0, 3, 4, 5] = float("nan")
    with pytest.raises(VolumeError, match="NaN"):
        model(x)
    with pytest.raises(VolumeError, match="floating point"):
        model(torch.zeros(1, 1, 20, 48, 48, dtype=torch.int16))
