"""Decoder loading, frozen vs trainable variants, the report loss and generation, on tiny random
GPT-2 and LLaMA models saved to a temporary folder."""

import json

import pytest
import torch
import torch.nn.functional as F

from engine.decoders import (
    apply_lora,
    assert_weights_unchanged,
    build_meta_causal_lm,
    decoder_config_names,
    load_causal_lm,
    load_decoder_config,
    weights_fingerprint,
)
from engine.errors import ConfigError
from engine.generation import (
    GenerationSettings,
    generate_from_prefix,
    left_pad_prefixes,
    stream_from_prefix,
)
from engine.model import IGNORE_INDEX, build_report_generator, encode_reports
from engine.variants import get_variant

D_EMBED, N_LABELS = 32, 18
REPORTS = ["No pleural effusion or pneumothorax.", "Cardiomegaly is present. Hiatal hernia is noted."]


@pytest.fixture(params=["gpt2", "llama"])
def decoder_dir(request, tiny_gpt2_dir, tiny_llama_dir):  # noqa: F811
    return tiny_gpt2_dir if request.param == "gpt2" else tiny_llama_dir


def make_generator(folder, variant, seed=0, **kwargs):
    decoder, tokenizer = load_causal_lm(folder)
    torch.manual_seed(seed)
    model = build_report_generator(
        variant, decoder, d_embed=D_EMBED, n_labels=N_LABELS, prefix_len=4, clip_len=4, n_layers=2, n_heads=4, **kwargs
    )
    return model, tokenizer


def batch(tokenizer, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids, mask = encode_reports(tokenizer, REPORTS[:n])
    return torch.randn(n, D_EMBED, generator=g), torch.randn(n, N_LABELS, generator=g), input_ids, mask


# --- loading -----------------------------------------------------------------------------------


def test_load_causal_lm_sets_pad_token_and_padding_side(tiny_gpt2_dir):  # noqa: F811
    model, tokenizer = load_causal_lm(tiny_gpt2_dir, padding_side="left")
    assert tokenizer.pad_token == tokenizer.eos_token  # the saved tokenizer had no pad token
    assert tokenizer.padding_side == "left"
    assert model.get_input_embeddings().embedding_dim == 64


def test_a_folder_that_is_not_a_causal_lm_is_refused_by_name(tmp_path, tiny_gpt2_dir):  # noqa: F811
    with pytest.raises(ConfigError, match="no such decoder folder") as err:
        load_causal_lm(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config.json") as err:
        load_causal_lm(empty)
    assert err.value.path == str(empty)

    encoder = tmp_path / "bert"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ConfigError, match="not a causal LM: architectures are BertModel") as err:
        load_causal_lm(encoder)
    assert err.value.path == str(encoder)

    no_tokenizer = tmp_path / "weights-only"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((tiny_gpt2_dir / name).read_bytes())
    with pytest.raises(ConfigError, match="no tokenizer") as err:
        load_causal_lm(no_tokenizer)
    assert err.value.path == str(no_tokenizer)

    with pytest.raises(ConfigError, match="no GGUF file"):
        load_causal_lm(tiny_gpt2_dir, gguf_file="model.Q4.gguf")


def test_shipped_architectures_build_on_meta_with_public_sizes():
    assert {"distilgpt2", "gpt2", "gpt2-medium", "llama-3.2-1b", "biogpt-large", "smollm2-135m"} <= set(decoder_config_names())
    llama = build_meta_causal_lm("llama-3.2-1b")
    c = load_decoder_config("llama-3.2-1b")
    assert next(llama.parameters()).device.type == "meta"
    kv = c.num_key_value_heads * c.hidden_size // c.num_attention_heads
    per_layer = 2 * c.hidden_size**2 + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    expected = c.vocab_size * c.hidden_size + c.num_hidden_layers * per_layer + c.hidden_size  # tied head
    assert sum(p.numel() for p in llama.parameters()) == expected
    assert round(expected / 1e9, 2) == 1.24  # LLaMA-3.2-1B: 1.24B parameters
    gpt2 = build_meta_causal_lm("gpt2")
    assert round(sum(p.numel() for p in gpt2.parameters()) / 1e6) == 124  # GPT-2 small: 124M
    with pytest.raises(ConfigError, match="no decoder config"):
        load_decoder_config("gpt-5")


# --- frozen vs trainable -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["v3", "v2", "linear"])
def test_frozen_decoder_is_bit_identical_after_a_step_while_the_connector_moves(tiny_gpt2_dir, tiny_tokenizer, variant):  # noqa: F811
    model, tokenizer = make_generator(tiny_gpt2_dir, variant)
    emb, logits, ids, mask = batch(tokenizer)
    logits.requires_grad_(True)  # as if fresh from a classifier that is still training
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    connector_before = {k: v.clone() for k, v in model.connector.state_dict().items()}
    fingerprint = weights_fingerprint(model.decoder)
    model.train()
    assert not model.decoder.training  # frozen decoder keeps dropout off
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    model.loss(emb, logits, ids, mask).backward()
    optimiser.step()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert logits.grad is None  # detached before the connector
    assert all(torch.equal(decoder_before[k], v) for k, v in model.decoder.state_dict().items())
    assert any(not torch.equal(connector_before[k], v) for k, v in model.connector.state_dict().items())
    assert_weights_unchanged(model.decoder, fingerprint)
    trainable, frozen = model.count_parameters()
    assert trainable == sum(p.numel() for p in model.connector.parameters())
    assert frozen == sum(p.numel() for p in model.decoder.parameters())


def test_v1_fine_tunes_the_decoder(tiny_llama_dir):  # noqa: F811
    model, tokenizer = make_generator(tiny_llama_dir, "v1")
    emb, logits, ids, mask = batch(tokenizer)
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    fingerprint = weights_fingerprint(model.decoder)
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    model.train()
    assert model.decoder.training
    model.loss(emb, logits, ids, mask).backward()
    optimiser.step()
    assert any(not torch.equal(before[k], v) for k, v in model.decoder.state_dict().items())
    with pytest.raises(RuntimeError, match="frozen decoder weights changed"):
        assert_weights_unchanged(model.decoder, fingerprint)
    assert model.count_parameters()[1] == 0


def test_variants_wire_logits_only_for_v3(tiny_gpt2_dir):  # noqa: F811
    v3, tok = make_generator(tiny_gpt2_dir, "v3")
    v2, _ = make_generator(tiny_gpt2_dir, "v2")
    emb, logits, _, _ = batch(tok)
    assert v3.prefix(emb, logits).shape == v2.prefix(emb, logits).shape == (2, 4, 64)
    assert not torch.equal(v3.prefix(emb, logits), v3.prefix(emb, logits + 1))
    assert torch.equal(v2.prefix(emb, logits), v2.prefix(emb, logits + 1))  # V-2 ignores logits
    assert v3.count_parameters()[0] - v2.count_parameters()[0] == N_LABELS * 4 * 64
    assert get_variant("r2gengpt") == get_variant("linear")
    with pytest.raises(ConfigError, match="unknown variant"):
        get_variant("v4")


def test_lora_trains_only_adapters(decoder_dir):
    model, tokenizer = make_generator(decoder_dir, "v2")
    decoder, _ = load_causal_lm(decoder_dir)
    wrapped = apply_lora(decoder)
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    from engine.decoders import LoraSettings

    lora_model, _ = make_generator(decoder_dir, "v3", lora=LoraSettings(r=2))
    emb, logits, ids, mask = batch(tokenizer)
    lora_model.loss(emb, logits, ids, mask).backward()
    grads = [n for n, p in lora_model.decoder.named_parameters() if p.grad is not None]
    assert grads and all("lora_" in n for n in grads)


# --- loss --------------------------------------------------------------------------------------


def test_labels_ignore_prefix_and_padding(tiny_gpt2_dir):  # noqa: F811
    model, tokenizer = make_generator(tiny_gpt2_dir, "v3")
    emb, logits, ids, mask = batch(tokenizer)
    assert (mask[0] == 0).any(), "the shorter report must be padded for this test"
    prefix = model.prefix(emb, logits)
    _, full_mask, labels = model.build_inputs(prefix, ids, mask)
    assert (labels[:, :4] == IGNORE_INDEX).all()
    assert torch.equal(labels[:, 4:][mask == 1], ids[mask == 1])
    assert (labels[:, 4:][mask == 0] == IGNORE_INDEX).all()
    assert full_mask[:, :4].all()

    repadded = ids.masked_fill(mask == 0, 7)  # another pad token value
    _, _, labels2 = model.build_inputs(prefix, repadded, mask)
    assert torch.equal(labels, labels2)
    assert torch.allclose(model.loss(emb, logits, ids, mask), model.loss(emb, logits, repadded, mask))
    _, _, labels3 = model.build_inputs(torch.randn_like(prefix), ids, mask)
    assert torch.equal(labels, labels3)


def test_loss_is_cross_entropy_over_report_tokens(decoder_dir):
    model, tokenizer = make_generator(decoder_dir, "v3")
    emb, logits, ids, mask = batch(tokenizer)
    loss = model.loss(emb, logits, ids, mask)
    with torch.no_grad():
        prefix = model.prefix(emb, logits)
        embeds = torch.cat((prefix, model.decoder.get_input_embeddings()(ids)), dim=1)
        full_mask = torch.cat((torch.ones(2, 4, dtype=mask.dtype), mask), dim=1)
        out = model.decoder(inputs_embeds=embeds, attention_mask=full_mask).logits
    terms = []
    for b in range(2):
        for t in range(int(mask[b].sum())):  # report token t sits at position 4 + t, predicted at 3 + t
            terms.append(-F.log_softmax(out[b, 3 + t], dim=-1)[ids[b, t]])
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    eos = tokenizer.eos_token_id
    assert all(ids[b, int(mask[b].sum()) - 1] == eos for b in range(2))  # EOS is learned too


# --- generation --------------------------------------------------------------------------------


def test_greedy_batch_of_16_equals_each_case_alone(decoder_dir):
    decoder, tokenizer = load_causal_lm(decoder_dir)
    prefix = torch.randn(16, 6, 64, generator=torch.Generator().manual_seed(3))
    settings = GenerationSettings(max_new_tokens=12)
    together = generate_from_prefix(decoder, tokenizer, prefix, settings=settings)
    alone = [generate_from_prefix(decoder, tokenizer, prefix[i : i + 1], settings=settings).reports[0] for i in range(16)]
    assert [r.token_ids for r in together.reports] == [r.token_ids for r in alone]
    assert len({tuple(r.token_ids) for r in alone}) > 8, "outputs should depend on the prefix"
    assert together.n_tokens == sum(r.n_tokens for r in alone) and together.seconds > 0
    assert together.first_token_seconds is not None
    assert all(r.text == tokenizer.decode(r.token_ids, skip_special_tokens=True).strip() for r in together.reports)


def test_left_padded_prefixes_decode_as_alone(decoder_dir):
    decoder, tokenizer = load_causal_lm(decoder_dir)
    g = torch.Generator().manual_seed(4)
    prefixes = [torch.randn(n, 64, generator=g) for n in (6, 3, 5)]
    settings = GenerationSettings(max_new_tokens=10)
    embeds, mask = left_pad_prefixes(prefixes)
    assert mask.tolist()[1] == [0, 0, 0, 1, 1, 1]
    padded = generate_from_prefix(decoder, tokenizer, embeds, mask, settings=settings)
    alone = [generate_from_prefix(decoder, tokenizer, p[None], settings=settings).reports[0] for p in prefixes]
    assert [r.token_ids for r in padded.reports] == [r.token_ids for r in alone]
    # the mask matters: attending to the zero padding changes the short cases
    unmasked = generate_from_prefix(decoder, tokenizer, embeds, torch.ones_like(mask), settings=settings)
    assert unmasked.reports[1].token_ids != alone[1].token_ids
    with pytest.raises(ValueError, match="left-padded"):
        generate_from_prefix(decoder, tokenizer, embeds, mask.flip(1), settings=settings)


def test_beam_search_runs_and_respects_limits(tiny_llama_dir):  # noqa: F811
    decoder, tokenizer = load_causal_lm(tiny_llama_dir)
    prefix = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(5))
    beams = generate_from_prefix(decoder, tokenizer, prefix, settings=GenerationSettings(max_new_tokens=8, num_beams=3))
    assert len(beams.reports) == 3 and all(0 < r.n_tokens <= 8 for r in beams.reports)
    assert beams.first_token_seconds is None
    with pytest.raises(ValueError, match="greedy"):
        generate_from_prefix(decoder, tokenizer, prefix, settings=GenerationSettings(num_beams=2), on_token=print)


def test_repetition_penalty_breaks_a_degenerate_loop(degenerate_gpt2_dir):  # noqa: F811
    decoder, tokenizer = load_causal_lm(degenerate_gpt2_dir)
    prefix = torch.randn(4, 5, 64, generator=torch.Generator().manual_seed(6))
    plain = generate_from_prefix(decoder, tokenizer, prefix, settings=GenerationSettings(max_new_tokens=12))
    penalised = generate_from_prefix(
        decoder, tokenizer, prefix, settings=GenerationSettings(max_new_tokens=12, repetition_penalty=10.0)
    )
    for a, b in zip(plain.reports, penalised.reports):
        assert len(set(a.token_ids)) <= 3, "this model should loop on a few tokens"
        assert len(set(b.token_ids)) > len(set(a.token_ids))


def test_streaming_and_token_callback_follow_greedy_output(tiny_gpt2_dir):  # noqa: F811
    decoder, tokenizer = load_causal_lm(tiny_gpt2_dir)
    prefix = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(7))
    settings = GenerationSettings(max_new_tokens=10)
    steps = []
    result = generate_from_prefix(decoder, tokenizer, prefix, settings=settings, on_token=steps.append)
    report = result.reports[0]
    assert [s[0] for s in steps[: report.n_tokens]] == report.token_ids
    streamed = "".join(stream_from_prefix(decoder, tokenizer, prefix, settings=settings))
    assert streamed.strip() == report.text


def test_report_generator_generate_uses_its_prefix(tiny_gpt2_dir):  # noqa: F811
    model, tokenizer = make_generator(tiny_gpt2_dir, "v3")
    emb, logits, _, _ = batch(tokenizer)
    settings = GenerationSettings(max_new_tokens=6)
    result = model.generate(emb, logits, tokenizer, settings)
    direct = generate_from_prefix(model.decoder, tokenizer, model.prefix(emb, logits), settings=settings)
    assert result.texts == direct.texts and len(result.texts) == 2


def test_trainable_weights_round_trip_and_mismatches_are_named(tiny_gpt2_dir):  # noqa: F811
    from engine.errors import CheckpointError

    trained, tokenizer = make_generator(tiny_gpt2_dir, "v3")
    state = trained.trainable_state_dict()
    assert state and all(k.startswith("connector.") for k in state)  # the frozen decoder is not stored
    fresh, _ = make_generator(tiny_gpt2_dir, "v3", seed=1)
    emb, logits, _, _ = batch(tokenizer)
    assert not torch.equal(fresh.prefix(emb, logits), trained.prefix(emb, logits))
    fresh.load_trainable_state_dict(state)
    assert torch.equal(fresh.prefix(emb, logits), trained.prefix(emb, logits))

    v2, _ = make_generator(tiny_gpt2_dir, "v2")
    with pytest.raises(CheckpointError, match="connector.linear.weight: shape"):
        v2.load_trainable_state_dict(state, "run/connector.safetensors")
    linear, _ = make_generator(tiny_gpt2_dir, "linear")
    with pytest.raises(CheckpointError, match="unexpected connector.prefix_const"):
        linear.load_trainable_state_dict(state)
