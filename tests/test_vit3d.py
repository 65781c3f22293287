"""M3D's ViT3D encoder and spatial-pooling connector against the fixtures made by M3D's own code
(shared/m3d: commit 63e7200, MONAI 1.3.0), and M3D's preprocessing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import chest_phantom
from engine.connectors import CONNECTORS, SpatialPoolingConfig, build_connector
from engine.encoders import ENCODERS, ViT3DConfig, load_vit3d_config
from engine.encoders.m3d_checkpoint import load_m3d_projector, load_m3d_vision
from engine.errors import CheckpointError, ConfigError, VolumeError
from engine.image_model import load_encoder
from engine.model_configs import M3D_PREPROCESS, PreprocessConfig
from engine.preprocess import preprocess
from engine.volume import Volume

# Copied verbatim from shared/m3d (outputs of M3D's own code with seeded random weights; its README
# says how they were made), shipped with the tests so that CI always checks the port against them.
M3D = Path(__file__).parent / "fixtures" / "m3d"
ATOL = 1e-5  # the fixtures' recommendation for float32 ports (a float64 run differs by <= 1e-6)


def m3d_kwargs(config: ViT3DConfig) -> dict:
    """The config in M3DCLIPConfig's argument names."""
    return {"in_channels": config.in_channels, "img_size": list(config.image_size),
            "patch_size": list(config.patch_size), "hidden_size": config.hidden_size, "mlp_dim": config.mlp_dim,
            "num_layers": config.num_layers, "num_heads": config.num_heads}


def small_encoder(clip_projection: bool = True):
    with torch.device("meta"):
        config = load_vit3d_config("m3d-small-fixture")
        return ENCODERS.build("vit3d", replace(config, clip_projection=clip_projection))


def small_connector(**kw):
    return build_connector(SpatialPoolingConfig(d_embed=64, d_llm=48, token_grid=(4, 6, 8), **kw))


@pytest.fixture(scope="module")
def fixture():
    state = load_file(str(M3D / "small_state_dict.safetensors"))
    return state, load_file(str(M3D / "small_input.safetensors"))["image"], load_file(str(M3D / "small_expected.safetensors"))


def test_small_fixture_loads_strictly_and_reproduces_every_intermediate(fixture):
    _, image, expected = fixture
    kwargs = json.loads((M3D / "small_config.json").read_text())["m3dclip_config_kwargs"]
    assert m3d_kwargs(load_vit3d_config("m3d-small-fixture")).items() <= kwargs.items()
    report = load_m3d_vision(small_encoder(), M3D / "small_state_dict.safetensors")
    assert (report.kind, report.loaded, report.dropped) == ("M3D-CLIP", 30, {"mm_projector.": 4})
    # The image model's factory: built on the meta device, the file's kind found by its prefixes.
    encoder = load_encoder("vit3d", load_vit3d_config("m3d-small-fixture").to_dict(),
                           M3D / "small_state_dict.safetensors")
    connector = small_connector()
    assert load_m3d_projector(connector, M3D / "small_state_dict.safetensors") == 4
    vit = encoder.vision_encoder
    with torch.no_grad():
        last, hidden = encoder.encode(image)
        tower = encoder.tower_features(last)
        got = {
            "patch_projection": vit.patch_embedding.patch_embeddings(image),
            "patch_embeddings": vit.patch_embedding(image),
            "block_0_hidden": hidden[0], "block_1_hidden": hidden[1], "last_feature": last,
            "tower_patch_features": tower, "projector_pooled": connector.pooled(tower),
            "projector_output": connector(tower), "clip_cls_projected": encoder.clip_embedding(last, normalize=False),
            "clip_image_embedding": encoder(image),
        }
        assert torch.equal(encoder.patch_features(image), tower)
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        assert torch.allclose(got[name], want, atol=ATOL, rtol=0), (name, (got[name] - want).abs().max())
    assert torch.allclose(got["clip_image_embedding"].norm(dim=-1), torch.ones(2))


def _lamed_state(state: dict, prefix: str = "") -> dict:
    """The small fixture as a LaMed checkpoint: tower and projector under LaMed's names, plus LLM keys."""
    out = {prefix + "model.vision_tower.vision_tower." + k[len("vision_encoder."):]: v
           for k, v in state.items() if k.startswith("vision_encoder.")}
    out.update({prefix + "model." + k: v for k, v in state.items() if k.startswith("mm_projector.")})
    out.update({prefix + "model.layers.0.mlp.weight": torch.ones(2, 2), prefix + "lm_head.weight": torch.ones(3, 2)})
    return out


def test_lamed_and_bare_vit_checkpoints_give_the_tower_and_projector(fixture, tmp_path):
    state, image, expected = fixture
    lamed = tmp_path / "lamed.safetensors"
    save_file(_lamed_state(state), str(lamed))
    wrapped = tmp_path / "model_with_lora.bin"  # peft's prefix in front of LaMed's names
    torch.save(_lamed_state(state, "base_model.model."), wrapped)
    bare = tmp_path / "pretrained_ViT.bin"
    torch.save({k[len("vision_encoder."):]: v for k, v in state.items() if k.startswith("vision_encoder.")}, bare)
    clip = M3D / "small_state_dict.safetensors"  # M3D-CLIP's ViT as a tower: mm_vision_proj dropped
    for path, kind in ((lamed, "M3D-LaMed"), (wrapped, "M3D-LaMed"), (bare, "M3D ViT (pretrained_ViT.bin)"),
                       (clip, "M3D-CLIP")):
        encoder = small_encoder(clip_projection=False)
        report = load_m3d_vision(encoder, path)
        assert (report.kind, report.loaded) == (kind, 28)
        assert report.dropped == {"lamed.safetensors": {"model.layers.": 1, "lm_head.": 1, "model.mm_projector.": 4},
                                  "pretrained_ViT.bin": {}, "small_state_dict.safetensors": {
                                      "mm_projector.": 4, "mm_vision_proj.": 2}}.get(path.name, report.dropped)
        with torch.no_grad():
            tower = encoder.patch_features(image)
        assert torch.allclose(tower, expected["tower_patch_features"], atol=ATOL, rtol=0)
    connector = small_connector()
    load_m3d_projector(connector, lamed)
    with torch.no_grad():
        assert torch.allclose(connector(tower), expected["projector_output"], atol=ATOL, rtol=0)
    with pytest.raises(ConfigError, match="no mm_vision_proj"):
        encoder(image)


def test_full_size_keys_and_shapes_match_m3d_clip_and_lamed():
    keys = json.loads((M3D / "full_keys.json").read_text())
    for config in (ViT3DConfig(), load_vit3d_config("m3d-full")):
        assert m3d_kwargs(config).items() <= keys["m3dclip_config"].items()
    with torch.device("meta"):
        clip = ENCODERS.build("vit3d")
        tower = ENCODERS.build("vit3d", "m3d-full").vision_encoder
    ours = {k: list(t.shape) for k, t in clip.state_dict().items()}
    assert ours == {e["key"]: e["shape"] for e in keys["m3dclip_vision_keys"]}
    assert sum(p.numel() for p in tower.parameters()) == keys["full_size_vit_parameter_count"] == 87_389_184
    phi3 = {e["key"]: e["shape"] for e in keys["lamed"]["phi3_mini_4b"]["vision_and_projector_keys"]}
    lamed_tower = {k: s for k, s in phi3.items() if k.startswith("model.vision_tower.")}
    for llm in ("phi3_mini_4b", "llama2_7b"):
        width = keys["lamed"][llm]["llm_hidden_size"]
        # Llama-2's listing gives its projector keys; its tower keys are Phi-3's (stated in the file).
        want = phi3 if llm == "phi3_mini_4b" else {
            **lamed_tower, **{e["key"]: e["shape"] for e in keys["lamed"][llm]["projector_keys"]}}
        assert len(want) == keys["lamed"][llm]["num_vision_and_projector_keys"] == 142
        with torch.device("meta"):
            connector = build_connector(SpatialPoolingConfig(d_llm=width))
        lamed = {"model.vision_tower.vision_tower." + k: list(t.shape) for k, t in tower.state_dict().items()}
        lamed.update({"model.mm_projector." + k: list(t.shape) for k, t in connector.state_dict().items()})
        assert lamed == want, llm
        assert connector.prefix_len == keys["lamed"][llm]["proj_out_num"] == 256


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    text = str(err.value)
    assert "\n" not in text and path.name in text
    return text


def test_wrong_kind_or_missing_key_is_one_line_naming_the_file(fixture, tmp_path):
    state, *_ = fixture
    ctclip = tmp_path / "CT-CLIP_v2.safetensors"
    save_file({"visual_transformer.norm.gamma": torch.ones(4), "text_transformer.x": torch.ones(1)}, str(ctclip))
    with pytest.raises(CheckpointError) as err:
        load_encoder("vit3d", ViT3DConfig().to_dict(), ctclip)  # the image model's factory, full size on meta
    assert "CT-CLIP checkpoint" in _one_line(err, ctclip)

    projector_only = tmp_path / "mm_projector.bin"
    torch.save({"model.mm_projector.projector.0.weight": torch.ones(2), "model.embed_tokens.weight": torch.ones(2)},
               projector_only)
    with pytest.raises(CheckpointError) as err:
        load_m3d_vision(small_encoder(False), projector_only)
    assert "without a vision tower" in _one_line(err, projector_only)

    lamed = tmp_path / "lamed.safetensors"
    save_file(_lamed_state(state), str(lamed))
    with pytest.raises(CheckpointError) as err:
        load_m3d_vision(small_encoder(True), lamed)
    assert "clip_projection false" in _one_line(err, lamed)

    missing = tmp_path / "model.safetensors"
    save_file({k: v for k, v in state.items() if k != "vision_encoder.norm.bias"}, str(missing))
    with pytest.raises(CheckpointError) as err:
        load_m3d_vision(small_encoder(), missing)
    assert "1 missing key(s): vision_encoder.norm.bias" in _one_line(err, missing)
    with pytest.raises(CheckpointError) as err:
        load_m3d_projector(small_connector(), ctclip)
    assert "no M3D spatial-pooling projector" in _one_line(err, ctclip)


def test_spatial_pooling_connector_checks_tokens_and_appends_logit_tokens(fixture):
    state, _, expected = fixture
    assert "spatial-pooling" in CONNECTORS.names()
    tower = expected["tower_patch_features"]
    with_cls = expected["last_feature"]
    with pytest.raises(ValueError, match="cls token must be dropped"):
        small_connector()(with_cls)
    torch.manual_seed(0)
    connector = small_connector(n_labels=18, logit_tokens=3)
    load_m3d_projector(connector, M3D / "small_state_dict.safetensors", partial=True)  # logit tokens: not M3D's
    logits = torch.randn(2, 18)
    with torch.no_grad():
        out = connector(tower, logits)
        assert out.shape == (2, 24 + 3, 48) and connector.prefix_len == 27
        assert torch.allclose(out[:, :24], expected["projector_output"], atol=ATOL, rtol=0)
        assert not torch.allclose(out[:, 24:], connector(tower, logits + 1)[:, 24:])
    with pytest.raises(ValueError, match="classifier logits"):
        connector(tower)
    with pytest.raises(ConfigError, match="multiple of pool_size"):
        SpatialPoolingConfig(token_grid=(3, 6, 8))


def test_m3d_preprocess_gives_the_unit_range_grid_in_s_p_l_order():
    hu = chest_phantom((40, 36, 24)).astype(np.float32)
    x = preprocess(Volume(hu, (1.0, 1.0, 2.0)), M3D_PREPROCESS)
    assert x.shape == (1, 32, 256, 256) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9

    # Axis order (D, H, W) = (S, P, L): a ramp along each volume axis varies along one output axis.
    i, j, k = np.meshgrid(np.arange(40), np.arange(36), np.arange(24), indexing="ij")
    small = PreprocessConfig(shape_xyz=(20, 18, 12), recipe="m3d")
    for ramp, out_axis in ((i, 3), (j, 2), (k, 1)):
        y = preprocess(Volume(ramp.astype(np.float32) + 5, (1.0, 1.0, 1.0)), small)[0]
        assert y.shape == (12, 18, 20)
        assert (y.diff(dim=out_axis - 1) > 0).all()
        other = [a for a in (0, 1, 2) if a != out_axis - 1]
        assert all(torch.allclose(y.diff(dim=a), torch.zeros(())) for a in other)

    # CropForeground: a border at the volume's minimum (a scanner fill) is cut away before resizing;
    # the fill still sets the minimum of the min-max.
    assert hu.min() > -3024
    padded = np.pad(hu, ((3, 1), (2, 0), (0, 4)), constant_values=-3024.0)
    want = torch.nn.functional.interpolate(((torch.from_numpy(hu) + 3024) / (hu.max() + 3024)).permute(2, 1, 0)[
        None, None], size=(12, 18, 20), mode="trilinear", align_corners=False)[0]
    assert torch.allclose(preprocess(Volume(padded, (1.0, 1.0, 2.0)), small), want, atol=1e-6)
    with pytest.raises(VolumeError, match="constant"):
        preprocess(Volume(np.zeros((8, 8, 8), np.float32), (1.0, 1.0, 1.0)), M3D_PREPROCESS)


def test_m3d_preprocess_config_keeps_older_json_and_changes_the_fingerprint():
    assert "recipe" not in PreprocessConfig().to_dict()  # older configs and caches keep their digests
    data = M3D_PREPROCESS.to_dict()
    assert data["recipe"] == "m3d" and PreprocessConfig.from_dict(data) == M3D_PREPROCESS
    assert M3D_PREPROCESS.fingerprint() != PreprocessConfig(shape_xyz=(256, 256, 32)).fingerprint()
    with pytest.raises(ConfigError, match="no HU windows"):
        PreprocessConfig(recipe="m3d", windows=((-1000, 400),))
