"""The project's former custom greedy decoder (engine/fast_generation.py until issue #16), kept as the
reference that bench/decode.py times transformers' `generate` against; the engine no longer uses it.

It measured 1.01-1.02x plain `generate` on the CPU and about the same as `generate` elsewhere (tables in
bench/RESULTS.md), so generation goes through `generate` (engine.generation). Kept here so that a GPU,
when one is lent, can show whether the static-cache + compiled-step loop beats
`generate(cache_implementation="static")` (which transformers compiles itself on CUDA); if it does not,
this file goes.

What it does:
- The prefix is run once (prefill), then one token per step through the KV cache, calling the
  model's forward directly: no logits processors, stopping criteria or per-step input preparation.
- CPU (default): a dynamic KV cache, and finished cases are RETIRED from the batch (their cache rows
  dropped), so a batch costs what its live cases cost.
- CUDA: a static KV cache with the decode step compiled (torch.compile "reduce-overhead", i.e.
  CUDA graphs), shapes fixed for the whole report; the loop stops as soon as every case has ended.

Identical tokens to `generate(inputs_embeds=..., do_sample=False)`: same left-padding convention
(position ids from the attention mask, counted from the first real prefix vector), the same argmax
over the last position's logits, EOS suppressed until `min_new_tokens`, and a finished case emits
the pad token afterwards. tests/test_greedy_reference.py checks it on tiny GPT-2 and LLaMA models and
on the demo's SmolLM2.

Dynamic int8 weights (`int8_decoder`) roughly halve the bytes read per CPU step but change the
logits, hence possibly the tokens (bench/decode.py --int8 times them).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# Fields of a model's generation config that add logits processors `generate` would apply even in
# plain greedy decoding; when any is set this loop would not give generate's tokens.
_PROCESSOR_FIELDS = (
    "suppress_tokens",
    "begin_suppress_tokens",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "sequence_bias",
    "exponential_decay_length_penalty",
)


@dataclass(frozen=True)
class FastGreedyOptions:
    """None picks by device: static cache and compiled step on CUDA, dynamic cache eager on the CPU."""

    static_cache: bool | None = None
    compile: bool | None = None
    retire_finished: bool = True  # dynamic cache only


def fast_greedy_supported(decoder: nn.Module) -> bool:
    """True when `decoder` is a plain transformers causal LM whose greedy output the fast path reproduces
    (no PEFT wrapper, no extra logits processors in its generation config)."""
    from transformers import PreTrainedModel

    if not isinstance(decoder, PreTrainedModel) or decoder.config.is_encoder_decoder:
        return False
    config = getattr(decoder, "generation_config", None)
    return config is None or not any(getattr(config, name, None) for name in _PROCESSOR_FIELDS)


@torch.no_grad()
def greedy_from_prefix(
    decoder,
    prefix: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    min_new_tokens: int = 0,
    on_token: Callable[[list[int]], None] | None = None,
    options: FastGreedyOptions = FastGreedyOptions(),
) -> tuple[list[list[int]], float | None]:
    """Greedy continuations of a left-padded (B, P, d) prefix: (per case, its tokens up to and
    including EOS when one came; seconds to the first token). `on_token(ids)` gets, after every
    step, the new token of every case (`pad_id` for cases already finished), as `generate` streams."""
    cuda = prefix.device.type == "cuda"
    static = cuda if options.static_cache is None else options.static_cache
    compiled = (cuda if options.compile is None else options.compile) and static
    embeds = prefix.to(decoder.get_input_embeddings().weight.dtype)
    mask = attention_mask.to(device=prefix.device, dtype=torch.long)
    loop = _static_loop if static else _dynamic_loop
    return loop(
        decoder, embeds, mask, max_new_tokens, torch.tensor(eos_ids, device=prefix.device), pad_id,
        min_new_tokens, on_token, compiled if static else options.retire_finished,
    )


def _first_positions(mask: torch.Tensor) -> torch.Tensor:
    # generate's convention: count from the first attended vector; padding gets 1 (never attended)
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def _pick(logits: torch.Tensor, eos: torch.Tensor, step: int, min_new_tokens: int) -> torch.Tensor:
    logits = logits.float()
    if step < min_new_tokens:
        logits[:, eos] = float("-inf")
    return logits.argmax(-1)


def _dynamic_loop(decoder, embeds, mask, max_new, eos, pad_id, min_new, on_token, retire):
    from transformers import DynamicCache

    b = embeds.shape[0]
    start = time.perf_counter()
    cache = DynamicCache(config=decoder.config)
    positions = _first_positions(mask)
    out = decoder(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
        use_cache=True, logits_to_keep=1,
    )
    live = torch.arange(b, device=embeds.device)  # batch row -> case
    done = torch.zeros(b, dtype=torch.bool, device=embeds.device)  # rows past EOS (not retiring)
    next_pos = positions[:, -1:] + 1
    tokens: list[list[int]] = [[] for _ in range(b)]
    first_seconds = None
    for step in range(max_new):
        chosen = _pick(out.logits[:, -1], eos, step, min_new).masked_fill(done, pad_id)
        row = [pad_id] * b
        for case, tok, was_done in zip(live.tolist(), chosen.tolist(), done.tolist()):
            if not was_done:
                tokens[case].append(tok)
                row[case] = tok
        if first_seconds is None:
            first_seconds = time.perf_counter() - start
        if on_token is not None:
            on_token(row)
        done = done | torch.isin(chosen, eos)
        if step + 1 == max_new or bool(done.all()):
            break
        if retire and bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            live, chosen, mask, next_pos, done = live[keep], chosen[keep], mask[keep], next_pos[keep], done[keep]
        mask = torch.cat((mask, mask.new_ones(mask.shape[0], 1)), dim=1)
        out = decoder(
            input_ids=chosen[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache,
            use_cache=True,
        )
        next_pos = next_pos + 1
    return tokens, first_seconds


def _cut(ids: list[int], eos_ids: list[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1]
    return ids


# The compiled decode step of each decoder, kept while the decoder lives (compiling takes seconds).
_COMPILED_STEPS: weakref.WeakKeyDictionary[nn.Module, Callable] = weakref.WeakKeyDictionary()


def _decode_step(decoder, compiled: bool) -> Callable:
    def step(input_ids, attention_mask, position_ids, cache_position, cache):
        return decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache_position=cache_position, past_key_values=cache, use_cache=True,
        ).logits[:, -1]

    if not compiled:
        return step
    if decoder not in _COMPILED_STEPS:
        _COMPILED_STEPS[decoder] = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    return _COMPILED_STEPS[decoder]


def _static_loop(decoder, embeds, mask, max_new, eos, pad_id, min_new, on_token, compiled):
    from transformers import StaticCache

    b, p = mask.shape
    total = p + max_new
    start = time.perf_counter()
    cache = StaticCache(config=decoder.config, max_cache_len=total)
    positions = _first_positions(mask)
    # One mask of the final length: slots after the current token are hidden by causality, so the
    # compiled step sees the same shapes every call.
    full_mask = torch.cat((mask, mask.new_ones(b, max_new)), dim=1)
    out = decoder(
        inputs_embeds=embeds, attention_mask=full_mask[:, :p], position_ids=positions, past_key_values=cache,
        cache_position=torch.arange(p, device=embeds.device), use_cache=True, logits_to_keep=1,
    )
    logits = out.logits[:, -1]
    step_fn = _decode_step(decoder, compiled)
    done = torch.zeros(b, dtype=torch.bool, device=embeds.device)
    next_pos = positions[:, -1:] + 1
    picked = []
    first_seconds = None
    for step in range(max_new):
        chosen = _pick(logits, eos, step, min_new).masked_fill(done, pad_id)
        picked.append(chosen)
        done = done | torch.isin(chosen, eos)
        if on_token is not None:
            on_token(chosen.tolist())
        if first_seconds is None:
            first_seconds = time.perf_counter() - start
        if step + 1 == max_new or bool(done.all()):
            break
        cache_position = torch.tensor([p + step], device=embeds.device)
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()
        logits = step_fn(chosen[:, None], full_mask, next_pos, cache_position, cache).clone()
        next_pos = next_pos + 1
    rows = torch.stack(picked, dim=1).tolist()
    eos_list = eos.tolist()
    return [_cut(r, eos_list) for r in rows], first_seconds


def int8_decoder(decoder: nn.Module) -> nn.Module:
    """A CPU copy of `decoder` with dynamic int8 Linear layers (weights int8, activations quantised
    per call). Faster on memory-bound CPUs but NOT token-identical to the fp32 model: opt-in only."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(decoder, {nn.Linear}, dtype=torch.qint8, inplace=False)




def reference_generate(decoder, tokenizer, prefix: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                       settings):
    """engine.generation.generate_from_prefix's result (greedy settings only) through this loop,
    for the benchmarks that time the two side by side."""
    from engine.generation import GeneratedReport, GenerationResult, eos_token_ids

    if settings.num_beams != 1 or settings.repetition_penalty != 1.0 or settings.no_repeat_ngram_size:
        raise ValueError("the reference loop is plain greedy decoding only")
    if attention_mask is None:
        attention_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
    eos = eos_token_ids(decoder, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    start = time.perf_counter()
    rows, first = greedy_from_prefix(decoder, prefix, attention_mask, max_new_tokens=settings.max_new_tokens,
                                     eos_ids=eos, pad_id=pad, min_new_tokens=settings.min_new_tokens)
    seconds = time.perf_counter() - start
    reports = []
    for row in rows:
        finished = bool(row) and row[-1] in eos
        kept = row[:-1] if finished else row
        reports.append(GeneratedReport(tokenizer.decode(kept, skip_special_tokens=True).strip(), kept, finished))
    return GenerationResult(reports, seconds, first, settings)


__all__ = ["FastGreedyOptions", "fast_greedy_supported", "greedy_from_prefix", "int8_decoder", "reference_generate"]
