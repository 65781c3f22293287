"""Report generation from prefix embeddings with transformers' `generate(inputs_embeds=...)`.

Decisions:
- No BOS token after the prefix: the connectors are trained with the report's first token directly
  after the prefix (ClipCap's convention, engine.model), so generation starts from the prefix alone.
- Greedy decoding is the default (the paper's setting); beam search, repetition penalty and
  no-repeat n-grams are options. Decoding stops at EOS or after max_new_tokens.
- Batches are LEFT-padded: a shorter prefix gets zero vectors before it with attention mask 0, so
  every sequence ends at the same position and new tokens follow directly; position ids are derived
  from the mask by transformers, so a padded case decodes exactly as it would alone.
- Every setting goes through transformers' `generate`. The project's own greedy loop measured no
  faster on the CPU (bench/RESULTS.md) and now lives in bench/greedy_reference.py as the reference
  bench/decode.py times `generate` against. `cache_implementation` passes through (e.g. "static",
  which transformers compiles itself on CUDA); None keeps generate's dynamic cache, the fastest
  measured on the CPU.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers.generation.streamers import BaseStreamer

from engine.model_configs import GenerationSettings  # defined without torch


@dataclass
class GeneratedReport:
    text: str
    token_ids: list[int]  # generated tokens before EOS
    finished: bool  # True when EOS ended it, False when max_new_tokens cut it

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class GenerationResult:
    reports: list[GeneratedReport]
    seconds: float  # wall time of the whole batch
    first_token_seconds: float | None = None  # time to the first new token (greedy only)
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.reports]

    @property
    def n_tokens(self) -> int:
        return sum(r.n_tokens for r in self.reports)

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")


def left_pad_prefixes(prefixes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (P_i, d) prefixes of possibly different lengths into (B, max P, d) embeddings with
    zeros on the left, and the (B, max P) attention mask that hides them."""
    width = max(p.shape[0] for p in prefixes)
    d = prefixes[0].shape[-1]
    embeds = prefixes[0].new_zeros(len(prefixes), width, d)
    mask = torch.zeros(len(prefixes), width, dtype=torch.long, device=prefixes[0].device)
    for i, p in enumerate(prefixes):
        embeds[i, width - p.shape[0] :] = p
        mask[i, width - p.shape[0] :] = 1
    return embeds, mask


@torch.no_grad()
def generate_from_prefix(
    decoder,
    tokenizer,
    prefix: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    settings: GenerationSettings = GenerationSettings(),
    on_token: Callable[[list[int]], None] | None = None,
    cache_implementation: str | None = None,
) -> GenerationResult:
    """Reports continuing a (B, P, d_llm) prefix (left-padded when `attention_mask` has zeros).
    `on_token(ids)` is called after every greedy step with the new token of each case (the pad token
    for cases already finished)."""
    if prefix.dim() != 3:
        raise ValueError(f"prefix must be (batch, length, hidden), got shape {tuple(prefix.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
    elif attention_mask.shape != prefix.shape[:2]:
        raise ValueError(
            f"attention mask {tuple(attention_mask.shape)} does not match prefix {tuple(prefix.shape[:2])}"
        )
    elif bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("prefixes must be left-padded: the last position of every case must be attended")
    eos_ids = eos_token_ids(decoder, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    streamer = _StepStreamer(on_token) if settings.num_beams == 1 else None
    if on_token is not None and streamer is None:
        raise ValueError("per-token callbacks work with greedy decoding only (num_beams = 1)")

    start = time.perf_counter()
    if streamer is not None:
        streamer.start = start
    with warnings.catch_warnings():
        # There is no prompt: the penalty applying to new tokens only is exactly what is wanted.
        warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with `inputs_embeds`")
        out = decoder.generate(
            inputs_embeds=prefix.to(decoder.get_input_embeddings().weight.dtype),
            attention_mask=attention_mask,
            streamer=streamer,
            cache_implementation=cache_implementation,
            **_generate_kwargs(settings, eos_ids, pad_id),
        )
    seconds = time.perf_counter() - start
    reports = [_to_report(row.tolist(), eos_ids, tokenizer) for row in out]
    return GenerationResult(
        reports, seconds, streamer.first_token_seconds if streamer is not None else None, settings
    )


def stream_from_prefix(
    decoder, tokenizer, prefix: torch.Tensor, *, settings: GenerationSettings = GenerationSettings()
) -> Iterator[str]:
    """Text pieces of one report as they are generated (greedy; prefix (1, P, d_llm)), for a UI."""
    from transformers import TextIteratorStreamer

    if prefix.dim() != 3 or prefix.shape[0] != 1:
        raise ValueError(f"streaming takes one prefix of shape (1, length, hidden), got {tuple(prefix.shape)}")
    if settings.num_beams != 1:
        raise ValueError("streaming works with greedy decoding only (num_beams = 1)")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)
    eos_ids = eos_token_ids(decoder, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    kwargs = dict(
        inputs_embeds=prefix.to(decoder.get_input_embeddings().weight.dtype),
        attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
        streamer=streamer,
        **_generate_kwargs(settings, eos_ids, pad_id),
    )

    def run():
        with torch.no_grad():
            decoder.generate(**kwargs)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    for piece in streamer:
        if piece:
            yield piece
    worker.join()


def eos_token_ids(decoder, tokenizer) -> list[int]:
    """Every token id that ends a report: the tokenizer's EOS and the model's generation config's."""
    ids: list[int] = []
    for source in (tokenizer.eos_token_id, getattr(getattr(decoder, "generation_config", None), "eos_token_id", None)):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("neither the tokenizer nor the model defines an EOS token")
    return ids


def _generate_kwargs(settings: GenerationSettings, eos_ids: list[int], pad_id: int) -> dict:
    return dict(
        do_sample=False,
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        num_beams=settings.num_beams,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        length_penalty=settings.length_penalty,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )


def _to_report(ids: list[int], eos_ids: list[int], tokenizer) -> GeneratedReport:
    stop = next((i for i, t in enumerate(ids) if t in eos_ids), None)
    kept = ids if stop is None else ids[:stop]
    text = tokenizer.decode(kept, skip_special_tokens=True).strip()
    return GeneratedReport(text=text, token_ids=kept, finished=stop is not None)


class _StepStreamer(BaseStreamer):
    """transformers streamer protocol (put/end): times the first token and forwards each step."""

    def __init__(self, on_token: Callable[[list[int]], None] | None):
        self.on_token = on_token
        self.start = time.perf_counter()
        self.first_token_seconds: float | None = None
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # generate() first hands over the (empty) prompt ids
            self._seen_prompt = True
            return
        if self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - self.start
        if self.on_token is not None:
            self.on_token(value.reshape(-1).tolist())

    def end(self) -> None:
        pass
