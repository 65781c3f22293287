"""The fast greedy path (engine.fast_generation) gives exactly transformers' `generate` tokens, on tiny
random GPT-2 and LLaMA models, alone and in batches whose cases end at different steps."""

import pytest
import torch
from decoder_fixtures import tiny_gpt2_dir, tiny_llama_dir, tiny_tokenizer  # noqa: F401

from engine.decoders import apply_lora, load_causal_lm
from engine.fast_generation import FastGreedyOptions, fast_greedy_supported, greedy_from_prefix
from engine.generation import (
    GenerationSettings,
    eos_token_ids,
    generate_from_prefix,
    left_pad_prefixes,
    stream_from_prefix,
    uses_fast_greedy,
)

MAX_NEW = 16
DYNAMIC, STATIC = FastGreedyOptions(static_cache=False), FastGreedyOptions(static_cache=True, compile=False)


@pytest.fixture(params=["gpt2", "llama"])
def staggered(request, tiny_gpt2_dir, tiny_llama_dir):  # noqa: F811
    """(decoder, tokenizer, prefix of 5 cases) where a second EOS token makes the cases end at
    different steps (random tiny models rarely emit the real EOS)."""
    decoder, tokenizer = load_causal_lm(tiny_gpt2_dir if request.param == "gpt2" else tiny_llama_dir)
    prefix = torch.randn(5, 6, 64, generator=torch.Generator().manual_seed(11))
    plain = generate_from_prefix(decoder, tokenizer, prefix, settings=GenerationSettings(max_new_tokens=MAX_NEW), fast=False)
    firsts: dict[int, set[int]] = {}  # token -> the steps at which it first appears, over the cases
    for r in plain.reports:
        for t in set(r.token_ids):
            firsts.setdefault(t, set()).add(r.token_ids.index(t))
    stop = max(firsts, key=lambda t: len(firsts[t]))
    decoder.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    return decoder, tokenizer, prefix


def _fast(decoder, tokenizer, prefix, mask=None, options=DYNAMIC, settings=GenerationSettings(max_new_tokens=MAX_NEW), **kw):
    eos = eos_token_ids(decoder, tokenizer)
    if mask is None:
        mask = torch.ones(prefix.shape[:2], dtype=torch.long)
    rows, _ = greedy_from_prefix(
        decoder, prefix, mask, max_new_tokens=settings.max_new_tokens, eos_ids=eos, pad_id=tokenizer.pad_token_id,
        min_new_tokens=settings.min_new_tokens, options=options, **kw,
    )
    return rows


def _strip(rows, eos):
    return [[t for t in r if t not in eos] if r and r[-1] in eos else r for r in rows]


@pytest.mark.parametrize("options", [DYNAMIC, STATIC, FastGreedyOptions(static_cache=False, retire_finished=False)])
def test_fast_greedy_gives_generates_tokens_in_a_staggered_batch_and_alone(staggered, options):
    decoder, tokenizer, prefix = staggered
    eos = eos_token_ids(decoder, tokenizer)
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    plain = generate_from_prefix(decoder, tokenizer, prefix, settings=settings, fast=False)
    lengths = [r.n_tokens for r in plain.reports]
    assert len(set(lengths)) >= 3 and any(r.finished for r in plain.reports), f"finish times not staggered: {lengths}"
    rows = _fast(decoder, tokenizer, prefix, options=options)
    assert _strip(rows, eos) == [r.token_ids for r in plain.reports]
    assert [bool(r) and r[-1] in eos for r in rows] == [r.finished for r in plain.reports]
    for i in (0, 3):  # batch of one
        alone = generate_from_prefix(decoder, tokenizer, prefix[i : i + 1], settings=settings, fast=False)
        assert _strip(_fast(decoder, tokenizer, prefix[i : i + 1], options=options), eos) == [alone.reports[0].token_ids]


def test_generate_from_prefix_routes_greedy_through_the_fast_path(staggered):
    decoder, tokenizer, prefix = staggered
    settings = GenerationSettings(max_new_tokens=MAX_NEW, min_new_tokens=5)  # min_new_tokens suppresses EOS
    assert uses_fast_greedy(decoder, settings)
    fast = generate_from_prefix(decoder, tokenizer, prefix, settings=settings)
    plain = generate_from_prefix(decoder, tokenizer, prefix, settings=settings, fast=False)
    assert [r.token_ids for r in fast.reports] == [r.token_ids for r in plain.reports]
    assert [r.finished for r in fast.reports] == [r.finished for r in plain.reports]
    assert fast.texts == plain.texts and min(r.n_tokens for r in fast.reports) >= 5
    assert fast.first_token_seconds is not None and 0 < fast.first_token_seconds <= fast.seconds

    calls = []
    handle = decoder.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    try:
        result = generate_from_prefix(decoder, tokenizer, prefix, settings=GenerationSettings(max_new_tokens=MAX_NEW))
    finally:
        handle.remove()
    # finished cases were retired: once one had ended, later steps ran on fewer rows than the batch
    steps = [kw["input_ids"].shape[0] for kw in calls if kw.get("input_ids") is not None]
    first_end = min(r.n_tokens for r in result.reports if r.finished) + 1  # its EOS was step n_tokens + 1
    assert len(steps) == max(r.n_tokens + r.finished for r in result.reports) - 1
    assert steps[: first_end - 1] == [5] * (first_end - 1) and steps[-1] < 5 and steps == sorted(steps, reverse=True)


def test_left_padding_and_per_token_callback_match_generate(staggered):
    decoder, tokenizer, _ = staggered
    g = torch.Generator().manual_seed(12)
    embeds, mask = left_pad_prefixes([torch.randn(n, 64, generator=g) for n in (6, 2, 4, 6)])
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    plain_steps, fast_steps = [], []
    plain = generate_from_prefix(decoder, tokenizer, embeds, mask, settings=settings, fast=False, on_token=plain_steps.append)
    fast = generate_from_prefix(decoder, tokenizer, embeds, mask, settings=settings, on_token=fast_steps.append)
    assert [r.token_ids for r in fast.reports] == [r.token_ids for r in plain.reports]
    assert fast_steps == plain_steps  # pad tokens for the finished cases, one call per step
    static = _fast(decoder, tokenizer, embeds, mask, options=STATIC)
    assert _strip(static, eos_token_ids(decoder, tokenizer)) == [r.token_ids for r in plain.reports]


def test_streaming_uses_the_fast_path_and_matches(tiny_llama_dir):  # noqa: F811
    decoder, tokenizer = load_causal_lm(tiny_llama_dir)
    prefix = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(13))
    settings = GenerationSettings(max_new_tokens=10)
    fast = "".join(stream_from_prefix(decoder, tokenizer, prefix, settings=settings))
    plain = "".join(stream_from_prefix(decoder, tokenizer, prefix, settings=settings, fast=False))
    assert fast == plain and fast.strip() == generate_from_prefix(decoder, tokenizer, prefix, settings=settings).texts[0]


def test_settings_and_models_the_fast_path_cannot_reproduce_fall_back(tiny_gpt2_dir):  # noqa: F811
    decoder, _ = load_causal_lm(tiny_gpt2_dir)
    assert uses_fast_greedy(decoder, GenerationSettings())
    for settings in (
        GenerationSettings(num_beams=3),
        GenerationSettings(repetition_penalty=1.3),
        GenerationSettings(no_repeat_ngram_size=3),
    ):
        assert not uses_fast_greedy(decoder, settings)
    decoder.generation_config.suppress_tokens = [5]
    assert not fast_greedy_supported(decoder)
    decoder.generation_config.suppress_tokens = None
    assert not fast_greedy_supported(apply_lora(decoder))
