"""`rad3d train-multimodal`: one stage of the multimodal system (image tokens + LoRA decoder; see
training.multimodal_recipe) on the embedding cache, written as a multimodal run."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args
from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-multimodal",
        help="train the image-token + LoRA system (stage 1: connector; stage 2: + LoRA) for reports and VQA",
        description="M3D's two stages on cached image features: --stage 1 trains the connector alone (decoder "
        "frozen); --stage 2 --init-from STAGE1_RUN trains the connector and LoRA adapters and saves the decoder "
        "with the adapters merged in. Tasks: report (\"Findings:\" -> the report section) and vqa (question -> "
        "answer, from the dataset's vqa.csv: rad3d vqa build). "
        "Checkpoints and --resume as rad3d train. Example: rad3d train-multimodal "
        "--stage 1 --tasks report vqa --data DATA --cache CACHE --decoder DECODER_DIR "
        "--image-model IMAGE --out RUN1",
    )
    from training.commands.train import add_checkpoint_arguments
    from training.configs import MultimodalTrainConfig

    add_config_arguments(p, MultimodalTrainConfig)
    add_data_arguments(p)
    add_checkpoint_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import source_from_args
    from training.configs import MultimodalTrainConfig
    from training.multimodal_recipe import train_multimodal

    config = config_from_args(MultimodalTrainConfig, args, data=source_from_args(args))
    train_multimodal(config, resume=args.resume, stop_at_step=args.stop_at_step,
                     time_limit_s=None if args.time_limit is None else 60.0 * args.time_limit,
                     progress=not args.no_progress)
    return 0
