"""Generation goes through transformers' `generate`; the project's former custom greedy loop
(bench/greedy_reference.py, the reference bench/decode.py times against) gives exactly the same tokens,
on tiny random GPT-2 and LLaMA models alone and in batches whose cases end at different steps, and on
the demo's SmolLM2: today's reports are the ones the custom loop wrote."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from engine.decoders import apply_lora, load_causal_lm
from engine.generation import (
    GenerationSettings,
    eos_token_ids,
    generate_from_prefix,
    left_pad_prefixes,
    stream_from_prefix,
)

# bench/ is not a package (its scripts import their siblings); load the one file without touching sys.path
_SPEC = importlib.util.spec_from_file_location("greedy_reference",
                                               Path(__file__).resolve().parents[1] / "bench/greedy_reference.py")
_reference_module = sys.modules.setdefault("greedy_reference", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(_reference_module)
FastGreedyOptions = _reference_module.FastGreedyOptions
fast_greedy_supported = _reference_module.fast_greedy_supported
greedy_from_prefix = _reference_module.greedy_from_prefix

MAX_NEW = 16
DYNAMIC, STATIC = FastGreedyOptions(static_cache=False), FastGreedyOptions(static_cache=True, compile=False)


@pytest.fixture(params=["gpt2", "llama"])
def staggered(request, tiny_gpt2_dir, tiny_llama_dir):  # noqa: F811
    """(decoder, tokenizer, prefix of 5 cases) where a second EOS token makes the cases end at
    different steps (random tiny models rarely emit the real EOS)."""
    decoder, tokenizer = load_causal_lm(tiny_gpt2_dir if request.param == "gpt2" else tiny_llama_dir)
    prefix = torch.randn(5, 6, 64, generator=torch.Generator().manual_seed(11))
    plain = generate_from_prefix(decoder, tokenizer, prefix, settings=GenerationSettings(max_new_tokens=MAX_NEW))
    firsts: dict[int, set[int]] = {}  # token -> the steps at which it first appears, over the cases
    for r in plain.reports:
        for t in set(r.token_ids):
            firsts.setdefault(t, set()).add(r.token_ids.index(t))
    stop = max(firsts, key=lambda t: len(firsts[t]))
    decoder.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    return decoder, tokenizer, prefix


def _reference(decoder, tokenizer, prefix, mask=None, options=DYNAMIC, settings=GenerationSettings(max_new_tokens=MAX_NEW), **kw):
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
def test_reference_loop_gives_generates_tokens_in_a_staggered_batch_and_alone(staggered, options):
    decoder, tokenizer, prefix = staggered
    eos = eos_token_ids(decoder, tokenizer)
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    plain = generate_from_prefix(decoder, tokenizer, prefix, settings=settings)
    lengths = [r.n_tokens for r in plain.reports]
    assert len(set(lengths)) >= 3 and any(r.finished for r in plain.reports), f"finish times not staggered: {lengths}"
    rows = _reference(decoder, tokenizer, prefix, options=options)
    assert _strip(rows, eos) == [r.token_ids for r in plain.reports]
    assert [bool(r) and r[-1] in eos for r in rows] == [r.finished for r in plain.reports]
    for i in (0, 3):  # batch of one
        alone = generate_from_prefix(decoder, tokenizer, prefix[i : i + 1], settings=settings)
        assert _strip(_reference(decoder, tokenizer, prefix[i : i + 1], options=options), eos) == [alone.reports[0].token_ids]


def test_min_new_tokens_static_cache_and_timing_through_generate(staggered):
    decoder, tokenizer, prefix = staggered
    settings = GenerationSettings(max_new_tokens=MAX_NEW, min_new_tokens=5)  # min_new_tokens suppresses EOS
    dynamic = generate_from_prefix(decoder, tokenizer, prefix, settings=settings)
    static = generate_from_prefix(decoder, tokenizer, prefix, settings=settings, cache_implementation="static")
    eos = eos_token_ids(decoder, tokenizer)
    assert [r.token_ids for r in dynamic.reports] == _strip(_reference(decoder, tokenizer, prefix, settings=settings), eos)
    assert [r.token_ids for r in static.reports] == [r.token_ids for r in dynamic.reports]
    assert [r.finished for r in static.reports] == [r.finished for r in dynamic.reports]
    assert min(r.n_tokens for r in dynamic.reports) >= 5
    assert dynamic.first_token_seconds is not None and 0 < dynamic.first_token_seconds <= dynamic.seconds


def test_left_padding_and_per_token_callback_match_the_reference(staggered):
    decoder, tokenizer, _ = staggered
    g = torch.Generator().manual_seed(12)
    embeds, mask = left_pad_prefixes([torch.randn(n, 64, generator=g) for n in (6, 2, 4, 6)])
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    steps, reference_steps = [], []
    result = generate_from_prefix(decoder, tokenizer, embeds, mask, settings=settings, on_token=steps.append)
    rows = _reference(decoder, tokenizer, embeds, mask, on_token=reference_steps.append)
    eos = eos_token_ids(decoder, tokenizer)
    assert _strip(rows, eos) == [r.token_ids for r in result.reports]
    assert steps == reference_steps  # pad tokens for the finished cases, one call per step
    assert _strip(_reference(decoder, tokenizer, embeds, mask, options=STATIC), eos) == [r.token_ids for r in result.reports]


def test_streaming_matches_batch_generation(tiny_llama_dir):  # noqa: F811
    decoder, tokenizer = load_causal_lm(tiny_llama_dir)
    prefix = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(13))
    settings = GenerationSettings(max_new_tokens=10)
    streamed = "".join(stream_from_prefix(decoder, tokenizer, prefix, settings=settings))
    assert streamed.strip() == generate_from_prefix(decoder, tokenizer, prefix, settings=settings).texts[0]


def test_models_the_reference_loop_cannot_reproduce_are_named(tiny_gpt2_dir):  # noqa: F811
    decoder, _ = load_causal_lm(tiny_gpt2_dir)
    assert fast_greedy_supported(decoder)
    decoder.generation_config.suppress_tokens = [5]
    assert not fast_greedy_supported(decoder)
    decoder.generation_config.suppress_tokens = None
    assert not fast_greedy_supported(apply_lora(decoder))


@pytest.mark.slow
def test_demo_decoder_reports_are_the_custom_loops_token_for_token(smollm2_dir):  # noqa: F811
    """The demo's SmolLM2 (converted once per session from its registry package, ~1.5 min): left-padded
    embedded prompts, greedy until EOS, through generate, equal the former custom loop's tokens (what the app wrote)."""
    decoder, tokenizer = load_causal_lm(smollm2_dir)
    prompts = ["Findings:", "The lungs are clear. Impression:", "Heart size is normal. The mediastinum"]
    table = decoder.get_input_embeddings()
    with torch.no_grad():
        embeds, mask = left_pad_prefixes([table(tokenizer(p, return_tensors="pt").input_ids[0]) for p in prompts])
    settings = GenerationSettings(max_new_tokens=40)
    result = generate_from_prefix(decoder, tokenizer, embeds, mask, settings=settings)
    eos = eos_token_ids(decoder, tokenizer)
    reference = _strip(_reference(decoder, tokenizer, embeds, mask, settings=settings), eos)
    assert [r.token_ids for r in result.reports] == reference
    assert all(r.n_tokens > 3 for r in result.reports) and len({tuple(r) for r in reference}) == 3
    alone = generate_from_prefix(decoder, tokenizer, embeds[1:2, mask[1].argmax():], settings=settings)
    assert alone.reports[0].token_ids == reference[1]
