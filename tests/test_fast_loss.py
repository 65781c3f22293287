"""The chunked report-position loss (engine.losses) against transformers' `labels=` loss, on tiny
random GPT-2 and LLaMA models: same value, same connector gradients, no full logits."""

import pytest
import torch

from engine.decoders import load_causal_lm
from engine.losses import chunked_loss_supported, report_cross_entropy
from engine.model import build_report_generator, encode_reports

D_EMBED, N_LABELS, PREFIX = 32, 18, 4
REPORTS = [
    "No pleural effusion or pneumothorax.",
    "Cardiomegaly is present. Hiatal hernia is noted.",
    "Atelectasis at the left lung base.",
]


@pytest.fixture(params=["gpt2", "llama"])
def generator(request, tiny_gpt2_dir, tiny_llama_dir):  # noqa: F811
    decoder, tokenizer = load_causal_lm(tiny_gpt2_dir if request.param == "gpt2" else tiny_llama_dir)
    torch.manual_seed(0)
    model = build_report_generator(
        "v3", decoder, d_embed=D_EMBED, n_labels=N_LABELS, prefix_len=PREFIX, clip_len=4, n_layers=2, n_heads=4
    )
    g = torch.Generator().manual_seed(1)
    ids, mask = encode_reports(tokenizer, REPORTS)
    return model.train(), (torch.randn(3, D_EMBED, generator=g), torch.randn(3, N_LABELS, generator=g), ids, mask)


def _loss_and_grads(model, batch, chunked: bool):
    model.chunked_loss = chunked
    model.zero_grad()
    loss = model.loss(*batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.connector.named_parameters()}


def test_chunked_loss_and_connector_gradients_match_the_plain_path(generator):
    model, batch = generator
    assert model.uses_chunked_loss
    plain, plain_grads = _loss_and_grads(model, batch, chunked=False)
    fast, fast_grads = _loss_and_grads(model, batch, chunked=True)
    assert fast == pytest.approx(plain, abs=1e-3)
    assert fast == pytest.approx(plain, rel=1e-5)  # in fp32 it is the same sum, reordered
    assert plain_grads.keys() == fast_grads.keys()
    for name, g in plain_grads.items():
        assert torch.allclose(fast_grads[name], g, rtol=1e-4, atol=1e-6), name
    assert all(p.grad is None for p in model.decoder.parameters())  # the frozen decoder stays frozen


def test_logits_are_computed_only_at_report_positions_and_chunks_do_not_change_the_loss(generator):
    model, (emb, logits, ids, mask) = generator
    inputs_embeds, full_mask, labels = model.build_inputs(model.prefix(emb, logits), ids, mask)
    rows = []
    handle = model.decoder.get_output_embeddings().register_forward_hook(lambda m, a, out: rows.append(out.shape[0]))
    try:
        losses = [
            report_cross_entropy(model.decoder, inputs_embeds, full_mask, labels, chunk_size=c).item() for c in (1, 5, 1024)
        ]
    finally:
        handle.remove()
    n_report = int(mask.sum())  # every report token (EOS included) is predicted once, from the position before it
    assert sum(rows) == 3 * n_report and max(rows) == n_report
    assert rows[:n_report] == [1] * n_report
    assert losses[0] == pytest.approx(losses[2], rel=1e-5) and losses[1] == pytest.approx(losses[2], rel=1e-5)
    with pytest.raises(ValueError, match="chunk_size"):
        report_cross_entropy(model.decoder, inputs_embeds, full_mask, labels, chunk_size=0)


def test_only_frozen_supported_decoders_take_the_chunked_path(tiny_gpt2_dir):  # noqa: F811
    decoder, _ = load_causal_lm(tiny_gpt2_dir)
    assert chunked_loss_supported(decoder)
    full = build_report_generator("v1", decoder, d_embed=D_EMBED, n_labels=N_LABELS, prefix_len=PREFIX, n_layers=1, n_heads=4)
    assert not full.uses_chunked_loss  # a fine-tuned decoder keeps transformers' loss
    assert not chunked_loss_supported(torch.nn.Linear(4, 4))
