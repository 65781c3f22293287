"""`rad3d train`: train a report-generator variant's connector on the embedding cache and write
the inference run (see training.connector for the recipe and checkpoints)."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a variant's prefix mapper (v1, v2, v3, linear, ...) on the embedding cache",
        description="Trains the trainable part of a report generator on cached latents (and classifier "
        "logits for v3) with the NLL of the Findings tokens, on accelerate: the CPU (fp32), one GPU (bf16) "
        "or several under `accelerate launch`. Checkpoints every epoch and every --save-every-steps steps; "
        "--resume continues a stopped or killed run. Writes RUN as an inference run directory. Example: "
        "rad3d train --variant v3 --data DATA --cache CACHE --llm LLM_DIR --image-model IMAGE --out RUN",
    )
    p.add_argument("--variant", required=True, help="v1, v2, v3, linear, linear-prefix, r2gengpt or baseline")
    add_data_arguments(p)
    p.add_argument("--cache", required=True, help="embedding cache of that dataset (rad3d embed)")
    p.add_argument("--llm", required=True, help="local causal-LM folder (config, weights, tokenizer)")
    p.add_argument("--gguf-file", help="a GGUF file inside --llm to de-quantise and use")
    p.add_argument("--image-model", required=True, help="IMAGE folder (or a run) with encoder, classifier, label set")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--max-steps", type=int, help="cap on optimiser steps (the LR schedule spans them)")
    p.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate (default 2e-5)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--batch-size", type=int, default=8, help="cases per step and process (default 8)")
    p.add_argument("--prefix-len", type=int, default=10, help="prefix tokens (default 10)")
    p.add_argument("--clip-len", type=int, default=10, help="tokens the input is projected to (default 10)")
    p.add_argument("--layers", type=int, default=8, help="transformer mapper layers (default 8)")
    p.add_argument("--heads", type=int, default=8, help="mapper attention heads (default 8)")
    p.add_argument("--max-report-tokens", type=int, help="truncate longer reports to N tokens (EOS kept)")
    p.add_argument("--section", choices=("findings", "impression"), default="findings",
                   help="report section to learn (default findings, the paper's task; impression is short)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data order (default 0)")
    p.add_argument("--schedule", choices=("linear", "cosine", "constant"), default="linear",
                   help="LR after the warmup (default linear decay to 0)")
    p.add_argument("--warmup-steps", type=int, help="linear warmup steps (default 5%% of the steps)")
    p.add_argument("--max-grad-norm", type=float, default=0.0, help="clip gradients to this norm (default 0: off)")
    p.add_argument("--lora", action="store_true", help="LoRA adapters on the decoder instead of freezing/fine-tuning it")
    p.add_argument("--train-split", default="train", help="split to train on (default train)")
    p.add_argument("--valid-split", default="valid", help="split for validation loss (default valid)")
    p.add_argument("--save-every-steps", type=int, help="also checkpoint every N steps")
    p.add_argument("--eval-every-steps", type=int, help="also validate every N steps (default: each epoch)")
    p.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                   help="auto: bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--resume", action="store_true", help="continue from RUN's last checkpoint")
    p.add_argument("--stop-at-step", type=int, help="stop (with a checkpoint) after this step; resume later")
    p.add_argument("--time-limit", type=float, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import source_from_args
    from training.connector import TrainConfig, train_connector

    config = TrainConfig(
        variant=args.variant, data=source_from_args(args), cache=args.cache, llm=args.llm, image_model=args.image_model,
        out=args.out, gguf_file=args.gguf_file, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        batch_size=args.batch_size, prefix_len=args.prefix_len, clip_len=args.clip_len, layers=args.layers,
        heads=args.heads, max_report_tokens=args.max_report_tokens, seed=args.seed, schedule=args.schedule,
        warmup_steps=args.warmup_steps, max_steps=args.max_steps, max_grad_norm=args.max_grad_norm, lora=args.lora,
        train_split=args.train_split, valid_split=args.valid_split, save_every_steps=args.save_every_steps,
        eval_every_steps=args.eval_every_steps, mixed_precision=args.mixed_precision, section=args.section,
    )
    train_connector(
        config, resume=args.resume, stop_at_step=args.stop_at_step,
        time_limit_s=None if args.time_limit is None else 60.0 * args.time_limit, progress=not args.no_progress,
    )  # it prints its own summary, once (not once per process)
    return 0
