"""Greedy decoding from prefix embeddings: engine.fast_generation against transformers'
`generate(inputs_embeds=...)`, same random-weight model, same prefixes, in one process.

Every report is forced to the same length (min_new_tokens = max_new_tokens) so both paths do the
same number of steps; the tokens must be identical or the script exits 1.

    python3 bench/decode.py                                   # CPU: SmolLM2-135M dims, fp32
    python3 bench/decode.py --int8                            # + the opt-in int8 CPU decoder (not identical)
    python3 bench/decode.py --device cuda --llm-config llama-3.2-1b --batches 1 128 --tokens 256
Targets (issue #7, H100, LLaMA-3.2-1B, bf16): batch 1 ≤ 2 ms/token (≥ 6× plain), batch 128 ≥ 40k tokens/s (≥ 4×).
"""

from __future__ import annotations

import argparse
import sys

from _common import IdsOnlyTokenizer, environment, random_llm, timed


def main(argv=None) -> int:
    import torch

    from engine.fast_generation import int8_decoder
    from engine.generation import GenerationSettings, generate_from_prefix

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--llm-config", default="smollm2-135m")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--tokens", type=int, default=24, help="new tokens per report")
    ap.add_argument("--prefix-len", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--int8", action="store_true", help="also time the opt-in dynamic int8 decoder (CPU)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_llm(args.llm_config, device, dtype)
    d = model.get_input_embeddings().embedding_dim
    settings = GenerationSettings(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    tokenizer = IdsOnlyTokenizer(model.config.eos_token_id)
    print(environment(device))
    print(f"model {args.llm_config} (random weights, {dtype}), prefix {args.prefix_len}, {args.tokens} new tokens, "
          f"median of {args.repeats}")
    print(f"{'batch':>5} {'plain ms/tok':>12} {'fast ms/tok':>11} {'ratio':>6} {'plain tok/s':>11} {'fast tok/s':>10}  tokens equal")
    ok = True
    for b in args.batches:
        prefix = torch.randn(b, args.prefix_len, d, generator=torch.Generator().manual_seed(b)).to(device, dtype)
        run = lambda fast, m=model: generate_from_prefix(m, tokenizer, prefix, settings=settings, fast=fast)  # noqa: E731
        run(True)  # warm-up (and, on CUDA, compilation)
        run(False)
        fast_s, fast = timed(lambda: run(True), device, args.repeats)
        plain_s, plain = timed(lambda: run(False), device, args.repeats)
        equal = [r.token_ids for r in fast.reports] == [r.token_ids for r in plain.reports]
        ok &= equal
        n = b * args.tokens
        print(f"{b:>5} {plain_s / args.tokens * 1e3:>12.1f} {fast_s / args.tokens * 1e3:>11.1f} {plain_s / fast_s:>6.2f} "
              f"{n / plain_s:>11.0f} {n / fast_s:>10.0f}  {equal}")
        if args.int8 and device.type == "cpu":
            quantised = int8_decoder(model)
            run(True, quantised)
            q_s, q = timed(lambda: run(True, quantised), device, args.repeats)
            same = sum(a == c for x, y in zip(q.reports, plain.reports) for a, c in zip(x.token_ids, y.token_ids))
            print(f"{'':>5} int8 fast: {q_s / args.tokens * 1e3:.1f} ms/tok, {plain_s / q_s:.2f}x plain; "
                  f"{same}/{n} tokens equal to fp32 (opt-in, not identical)")
    print("tokens verified equal" if ok else "MISMATCH: fast tokens differ from generate")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
