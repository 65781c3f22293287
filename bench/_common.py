"""Shared bits of the benchmarks: a random-weight causal LM from a shipped config, timing medians and
the environment line every benchmark prints."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def environment(device) -> str:
    import torch
    import transformers

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return (
        f"device {device.type} ({where}), torch {torch.__version__}, transformers {transformers.__version__}, "
        f"python {platform.python_version()}, {torch.get_num_threads()} CPU threads"
    )


def random_decoder(name: str, device, dtype, seed: int = 0):
    """The shipped architecture `name` (engine/configs/decoders) with random weights, eval mode, frozen."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.decoders import freeze, load_decoder_config

    config = load_decoder_config(name)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return freeze(model)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> tuple[float, object]:
    """(median seconds over `repeats` calls, the last call's result)."""
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


class IdsOnlyTokenizer:
    """The tokenizer surface generate_from_prefix needs, for a random model without a tokenizer."""

    pad_token_id = None

    def __init__(self, eos):
        self.eos_token_id = eos

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))
