"""`rad3d train`: train a report-generator variant's connector on the embedding cache and write
the inference run (see training.connector_recipe for the recipe and checkpoints)."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args
from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a variant's prefix connector (v1, v2, v3, linear, ...) on the embedding cache",
        description="Trains the trainable part of a report generator on cached latents (and classifier "
        "logits for v3) with the NLL of the Findings tokens, on accelerate: the CPU (fp32), one GPU (bf16) "
        "or several under `accelerate launch`. Checkpoints every epoch and every --save-every-steps steps; "
        "--resume continues a stopped or killed run. Writes RUN as an inference run directory. Example: "
        "rad3d train --variant v3 --data DATA --cache CACHE --decoder DECODER_DIR --image-model IMAGE --out RUN",
    )
    from training.configs import TrainConfig

    add_config_arguments(p, TrainConfig)  # every setting of the recipe, with its default, from TrainConfig
    add_data_arguments(p)
    add_checkpoint_arguments(p)
    p.set_defaults(handler=run)


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """How a training run stops and resumes, the same for every decoder-training command."""
    p.add_argument("--resume", action="store_true", help="continue from RUN's last checkpoint")
    p.add_argument("--stop-at-step", type=int, help="stop (with a checkpoint) after this step; resume later")
    p.add_argument("--time-limit", type=float, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from engine.data import source_from_args
    from training.configs import TrainConfig
    from training.connector_recipe import train_connector

    config = config_from_args(TrainConfig, args, data=source_from_args(args))
    train_connector(
        config, resume=args.resume, stop_at_step=args.stop_at_step,
        time_limit_s=None if args.time_limit is None else 60.0 * args.time_limit, progress=not args.no_progress,
    )  # it prints its own summary, once (not once per process)
    return 0
