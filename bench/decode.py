"""Greedy decoding from prefix embeddings, four ways in one process on the same model and prefixes:
(a) the project's former custom loop (bench/greedy_reference.py), (b) transformers' `generate` with its
dynamic cache (what engine.generation runs), (c) `generate(cache_implementation="static")`, (d) (c) with
the forward compiled by transformers (auto on CUDA; on the CPU forced with CompileConfig).

Prefixes are left-padded batches of different lengths. Every report is forced to --tokens new tokens
(min_new_tokens = max_new_tokens) so all paths do the same steps; (a) and (c) must give (b)'s tokens
exactly or the script exits 1 (compiled kernels may round differently: (d) is reported, not enforced).

    python3 bench/decode.py                        # CPU: the demo's SmolLM2-135M, converted into a temp folder
    python3 bench/decode.py --decoder-dir DIR          # CPU: an already converted decoder folder
    python3 bench/decode.py --device cuda --decoder-config llama-3.2-1b --batches 1 128 --tokens 256   # GPU, random weights
Issue #16: (a) stays in the project only if it beats (c)/(d) on some device by a clear margin.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import IdsOnlyTokenizer, environment, random_decoder, timed

PROMPTS = (  # embedded as the prefixes of the real decoder, lengths 3-12 tokens
    "Findings:",
    "The lungs are clear. Findings:",
    "Chest CT without contrast. Findings:",
    "Impression: no acute cardiopulmonary",
    "There is a small right pleural effusion and",
    "Heart size is normal.",
    "Technique: axial images of the chest were obtained. Findings:",
    "Mediastinum:",
)
PATHS = ("reference loop (a)", "generate dynamic (b)", "generate static (c)", "static + compile (d)")


def load_decoder(args, device, dtype):
    """(decoder, tokenizer, what it is): the demo's SmolLM2 (or --decoder-dir), else random --decoder-config weights."""
    from engine.decoders import freeze, load_causal_lm

    if args.decoder_config:
        model = random_decoder(args.decoder_config, device, dtype)
        return model, IdsOnlyTokenizer(model.config.eos_token_id), f"{args.decoder_config} (random weights, {dtype})"
    folder = args.decoder_dir
    if folder is None:
        from training.demo.smollm2 import ensure_smollm2

        start = time.perf_counter()
        folder = ensure_smollm2(Path(tempfile.mkdtemp(prefix="rad3d-bench-")) / "smollm2")
        print(f"converted the demo's SmolLM2 into {folder} in {time.perf_counter() - start:.0f} s (not timed below)")
    model, tokenizer = load_causal_lm(folder, dtype=dtype)
    return freeze(model.to(device)), tokenizer, f"{Path(folder).name} ({dtype})"


def prefixes(model, tokenizer, batch: int, prefix_len: int, device, dtype):
    """A left-padded (batch, P, d) prefix and its mask: embedded prompts for a real tokenizer,
    random vectors of lengths prefix_len, prefix_len - 1, ... for random weights."""
    import torch

    from engine.generation import left_pad_prefixes

    if isinstance(tokenizer, IdsOnlyTokenizer):
        g = torch.Generator().manual_seed(batch)
        d = model.get_input_embeddings().embedding_dim
        rows = [torch.randn(max(1, prefix_len - i % 4), d, generator=g) for i in range(batch)]
    else:
        table = model.get_input_embeddings()
        ids = [tokenizer(PROMPTS[i % len(PROMPTS)], return_tensors="pt").input_ids[0].to(device) for i in range(batch)]
        rows = [table(i).detach() for i in ids]
    embeds, mask = left_pad_prefixes([r.to(device, dtype) for r in rows])
    return embeds, mask


def runners(model, tokenizer, settings, embeds, mask):
    """Name -> a call returning the batch's token lists, for the four paths."""
    from transformers import CompileConfig

    from engine.generation import generate_from_prefix
    from greedy_reference import reference_generate

    config = model.generation_config
    compiled = CompileConfig(fullgraph=False)
    compiled._compile_all_devices = True  # transformers compiles on accelerators only unless told

    def reference():
        return [r.token_ids for r in reference_generate(model, tokenizer, embeds, mask, settings=settings).reports]

    def through_generate(cache, compile_it):
        def run():
            config.disable_compile, config.compile_config = not compile_it, compiled if compile_it else None
            result = generate_from_prefix(model, tokenizer, embeds, mask, settings=settings, cache_implementation=cache)
            return [r.token_ids for r in result.reports]

        return run

    return dict(zip(PATHS, (reference, through_generate(None, False), through_generate("static", False),
                            through_generate("static", True))))


def interleaved(calls, paths, device, repeats: int, batch: int) -> dict:
    """name -> (warm-up s, median s, tokens). The paths take turns within every repeat, so a load that
    drifts on a shared machine falls on all of them alike."""
    import statistics

    warm, times, tokens = {}, {name: [] for name in paths}, {}
    for name in paths:
        print(f"  batch {batch}: {name} warm-up ...", file=sys.stderr, flush=True)
        warm[name], _ = timed(calls[name], device, 1)  # compilation for (d)
    for _ in range(repeats):
        for name in paths:
            seconds, tokens[name] = timed(calls[name], device, 1)
            times[name].append(seconds)
    return {name: (warm[name], statistics.median(times[name]), tokens[name]) for name in paths}


def main(argv=None) -> int:
    import torch

    from engine.generation import GenerationSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--decoder-config",
                    help="random weights of a shipped architecture (e.g. llama-3.2-1b) instead of the demo's SmolLM2")
    ap.add_argument("--decoder-dir", help="a converted decoder folder (default: convert the demo's SmolLM2 into a temp folder)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per report (forced)")
    ap.add_argument("--prefix-len", type=int, default=10, help="random weights: the longest prefix")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a shared machine)")
    ap.add_argument("--paths", nargs="+", type=int, choices=range(4), default=[0, 1, 2, 3],
                    help="which of (a)-(d) to time, by index (b is the baseline and always runs)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer, what = load_decoder(args, device, dtype)
    settings = GenerationSettings(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    paths = [PATHS[i] for i in sorted(set(args.paths) | {1})]
    print(environment(device))
    print(f"decoder {what}; greedy, {args.tokens} forced new tokens, left-padded prefixes; "
          f"median of {args.repeats}, paths in turn; ms/token = batch wall time / {args.tokens}")
    print(f"{'batch':>5}  {'path':<22} {'warm-up s':>9} {'ms/token':>9} {'tok/s':>7} {'vs (b)':>7}  tokens equal to (b)")
    ok = True
    for b in args.batches:
        embeds, mask = prefixes(model, tokenizer, b, args.prefix_len, device, dtype)
        calls = runners(model, tokenizer, settings, embeds, mask)
        results = interleaved(calls, paths, device, args.repeats, b)
        base_s, base_tokens = results[PATHS[1]][1:]
        for name, (warm, seconds, tokens) in results.items():
            equal = tokens == base_tokens
            ok &= equal or name == PATHS[3]
            print(f"{b:>5}  {name:<22} {warm:>9.1f} {seconds / args.tokens * 1e3:>9.1f} {b * args.tokens / seconds:>7.0f} "
                  f"{base_s / seconds:>6.2f}x  {equal}", flush=True)
    print("tokens verified equal" if ok else "MISMATCH: (a) or (c) tokens differ from generate's")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
