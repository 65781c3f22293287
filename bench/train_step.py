"""One training step of a V-3 connector through a frozen random-weight decoder: the project's step
(engine.losses' report-position chunked loss; on CUDA also bf16 autocast and fused AdamW) against the
plain step (transformers' `labels=` loss over full float32 logits, plain AdamW), same model and batch.

The two losses are compared at the same weights first (must agree to 1e-3, else exit 1).

    python3 bench/train_step.py                               # CPU: SmolLM2-135M dims, 2-layer connector, batch 4 x 48
    python3 bench/train_step.py --device cuda --decoder-config llama-3.2-1b --batch 32 --tokens 256 --connector-layers 8
Target (issue #7, H100): ≥ 1.7× the plain step's samples/s at batch 32 × 266 tokens (≥ 350 samples/s), peak memory no higher.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from functools import partial

from _common import environment, random_decoder, sync, timed


def main(argv=None) -> int:
    import torch

    from engine.model import build_report_generator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--decoder-config", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48, help="report tokens per sample (the prefix adds 10)")
    ap.add_argument("--connector-layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    # The frozen decoder in bf16 on CUDA (as the training code loads it), fp32 on the CPU (no bf16 units).
    decoder = random_decoder(args.decoder_config, device, torch.bfloat16 if cuda else torch.float32)
    torch.manual_seed(0)
    model = build_report_generator("v3", decoder, n_layers=args.connector_layers).to(device).train()
    model.connector.float()
    g = torch.Generator().manual_seed(1)
    b, t = args.batch, args.tokens
    emb = torch.randn(b, 512, generator=g).to(device)
    logits = torch.randn(b, 18, generator=g).to(device)
    ids = torch.randint(0, decoder.config.vocab_size, (b, t), generator=g).to(device)
    mask = torch.ones(b, t, dtype=torch.long, device=device)
    mask[: b // 2, t - t // 4 :] = 0  # some right padding, as in real batches

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def loss_of(chunked: bool):
        model.chunked_loss = chunked
        with autocast():
            return model.loss(emb, logits, ids, mask)

    with torch.no_grad():
        plain_loss, fast_loss = loss_of(False).item(), loss_of(True).item()
    agree = abs(plain_loss - fast_loss) <= 1e-3

    params = model.trainable_parameters()
    optimisers = {
        "plain": torch.optim.AdamW(params, lr=1e-5),
        "fast": torch.optim.AdamW(params, lr=1e-5, fused=cuda),
    }

    def step(kind: str):
        optimiser = optimisers[kind]
        optimiser.zero_grad(set_to_none=True)
        loss = loss_of(kind == "fast")
        loss.backward()
        optimiser.step()
        return loss

    rows = {}
    for kind in ("plain", "fast"):
        step(kind)  # warm-up
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds, _ = timed(partial(step, kind), device, args.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
        rows[kind] = (seconds, peak)

    print(environment(device))
    trainable, frozen = model.count_parameters()
    print(f"model {args.decoder_config} frozen ({frozen / 1e6:.1f}M, random weights) + V-3 connector "
          f"{args.connector_layers} layers ({trainable / 1e6:.1f}M); batch {b} x ({t} report + {model.prefix_len} prefix) "
          f"tokens; median of {args.repeats}")
    print(f"{'step':>5} {'s/step':>8} {'samples/s':>9} {'peak GiB':>8}")
    for kind, (seconds, peak) in rows.items():
        print(f"{kind:>5} {seconds:>8.3f} {b / seconds:>9.2f} {peak:>8.2f}")
    print(f"ratio fast/plain samples/s: {rows['plain'][0] / rows['fast'][0]:.2f}")
    print(f"loss plain {plain_loss:.6f}, fast {fast_loss:.6f}: " + ("agree to 1e-3" if agree else "MISMATCH"))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
