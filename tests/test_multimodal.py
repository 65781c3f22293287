"""The multimodal system's model (engine.multimodal): the splice, the labels, the two stages' trainable
weights, LoRA merge-and-save without peft."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.decoders import load_causal_lm
from engine.model import IGNORE_INDEX
from engine.model_configs import ConnectorConfig, GenerationSettings, LoraSettings, MultimodalConfig
from engine.multimodal import MultimodalModel, encode_prompts

N_IMAGE, D_FEATURES = 3, 16


def model_on(decoder_dir, mode="frozen", seed=0):
    decoder, tokenizer = load_causal_lm(decoder_dir)
    torch.manual_seed(seed)
    cfg = MultimodalConfig(ConnectorConfig(kind="linear", d_embed=D_FEATURES, d_llm=decoder.config.hidden_size,
                                           prefix_len=N_IMAGE), mode)
    return MultimodalModel(cfg, decoder, LoraSettings(r=4, dropout=0.0) if mode == "lora" else None), tokenizer


class _BosTokenizer:
    """The tiny tokenizer as LLaMA's behaves: a BOS token first unless special tokens are off."""

    def __init__(self, tok):
        self.tok, self.bos_token_id, self.eos_token_id, self.pad_token_id = tok, 7, tok.eos_token_id, tok.eos_token_id

    def __call__(self, text, add_special_tokens=True):
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


@pytest.mark.parametrize("with_bos", [False, True])
def test_splice_puts_image_tokens_at_the_placeholders_and_labels_only_the_answer(tiny_gpt2_dir, with_bos):
    model, tokenizer = model_on(tiny_gpt2_dir)
    tok = _BosTokenizer(tokenizer) if with_bos else tokenizer
    instructions, answers = ["Findings:", " Is there a nodule?"], [" The heart size is normal.", " yes"]
    prompts = encode_prompts(tok, N_IMAGE, instructions, answers)
    features = torch.randn(2, D_FEATURES)
    image = model.image_tokens(features)
    embeds = model.splice(image, prompts)
    table = model.decoder.get_input_embeddings().weight
    for i, (instruction, answer) in enumerate(zip(instructions, answers)):
        head = 1 if with_bos else 0
        assert int(prompts.image_start[i]) == head
        if with_bos:
            assert int(prompts.input_ids[i, 0]) == 7 and torch.equal(embeds[i, 0], table[7])
        torch.testing.assert_close(embeds[i, head:head + N_IMAGE], image[i], rtol=0, atol=0)
        instr = tokenizer(instruction, add_special_tokens=False)["input_ids"]
        ans = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        start = head + N_IMAGE
        assert prompts.input_ids[i, start:start + len(instr)].tolist() == instr
        torch.testing.assert_close(embeds[i, start:start + len(instr)], table[instr], rtol=0, atol=0)
        labels = prompts.labels[i]
        answer_at = start + len(instr)
        assert (labels[:answer_at] == IGNORE_INDEX).all()  # BOS, image, instruction: no loss
        assert labels[answer_at:answer_at + len(ans)].tolist() == ans  # the answer and EOS
        assert (labels[answer_at + len(ans):] == IGNORE_INDEX).all()  # padding
        assert prompts.attention_mask[i].sum() == answer_at + len(ans)


def test_left_padded_generation_gives_each_case_what_it_gives_alone(tiny_gpt2_dir):
    model, tokenizer = model_on(tiny_gpt2_dir)
    model.eval()
    features, settings = torch.randn(2, D_FEATURES), GenerationSettings(max_new_tokens=6)
    instructions = ["Findings:", " Is there a nodule in the right upper lobe?"]
    both = model.generate(features, None, encode_prompts(tokenizer, N_IMAGE, instructions), tokenizer, settings)
    for i, instruction in enumerate(instructions):
        alone = model.generate(features[i:i + 1], None, encode_prompts(tokenizer, N_IMAGE, [instruction]), tokenizer,
                               settings)
        assert alone.reports[0].token_ids == both.reports[i].token_ids
    streamed = "".join(model.stream(features[1:], None, encode_prompts(tokenizer, N_IMAGE, instructions[1:]), tokenizer,
                                    settings))
    assert streamed.strip() == both.reports[1].text


def _step(model, tokenizer):
    prompts = encode_prompts(tokenizer, N_IMAGE, ["Findings:", " Is there a nodule?"],
                             [" Cardiomegaly is present.", " no"])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(torch.randn(2, D_FEATURES), None, prompts).backward()
    opt.step()


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_a_stage_changes_only_its_weights(tiny_gpt2_dir, mode):
    """Stage 1 (frozen) trains the connector only; stage 2 (lora) the connector and the adapters; the
    decoder's own weights stay bit-identical."""
    model, tokenizer = model_on(tiny_gpt2_dir, mode)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for _ in range(2):  # LoRA's B starts at 0, so A moves from the second step on
        _step(model, tokenizer)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert changed == trainable
    assert any(k.startswith("connector.") for k in changed)
    adapters = {k for k in changed if "lora_" in k}
    assert bool(adapters) == (mode == "lora")
    assert changed == {k for k in before if k.startswith("connector.")} | adapters
    counts = model.count_parameters()
    assert counts["lora adapters"][0] == sum(before[k].numel() for k in adapters)
    assert counts["decoder"][0] == 0


@pytest.mark.parametrize("decoder_fixture", ["degenerate_gpt2_dir", "tiny_llama_dir"])
def test_merged_decoder_reloads_without_peft_and_gives_the_same_logits(decoder_fixture, request, tmp_path):
    """In float32 as inference runs. GPT-2 with transformers' usual initialisation; the LLaMA fixture's large
    one (0.3) makes float32 rounding alone move its logits (up to ~10) by ~5e-5, so it is compared in float64
    (what is compared is then the merge and its float32 weights) at atol 1e-4."""
    from engine.multimodal_run import save_merged_decoder

    model, tokenizer = model_on(request.getfixturevalue(decoder_fixture), "lora")
    for _ in range(2):
        _step(model, tokenizer)
    model.eval()
    prompts = encode_prompts(tokenizer, N_IMAGE, ["Findings:"], [" Hiatal hernia is noted."])
    features = torch.randn(1, D_FEATURES)
    with torch.no_grad():
        embeds = model.splice(model.image_tokens(features), prompts)
    save_merged_decoder(model.merged_decoder(), tokenizer, tmp_path / "decoder")
    assert not any("lora" in p.name for p in (tmp_path / "decoder").iterdir())
    plain, _ = load_causal_lm(tmp_path / "decoder")
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert type(plain).__module__.startswith("transformers.")
    large = decoder_fixture == "tiny_llama_dir"
    dtype, atol = (torch.float64, 1e-4) if large else (torch.float32, 1e-5)
    with torch.no_grad():
        run = dict(inputs_embeds=embeds.to(dtype), attention_mask=prompts.attention_mask)
        wrapped = copy.deepcopy(model.decoder).to(dtype)
        want = wrapped(**run).logits
        got = plain.to(dtype)(**run).logits
        with wrapped.disable_adapter():
            base = wrapped(**run).logits
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
    assert (got - base).abs().max() > 100 * atol  # the adapters changed the outputs: the merge carried them
