"""`rad3d embed`: fill the embedding cache for a dataset with a frozen encoder (and classifier)."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="compute each volume's encoder latent (and classifier logits) once into a cache",
        description="Read every volume of a CT-RATE-format dataset, preprocess it, run the frozen encoder "
        "and store the latent under its VolumeName. A rerun skips volumes already cached. Give either "
        "--image-model (an image model folder or a run: encoder, classifier and preprocessing; logits are "
        "stored too) or --encoder with --encoder-config (e.g. a CT-CLIP checkpoint). Under `accelerate launch` "
        "each process embeds its shard of the volumes still missing (several GPUs or machines; rerun to resume).",
    )
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="cache folder (created or resumed)")
    p.add_argument("--image-model", "--run", dest="image_model",
                   help="take encoder, classifier and preprocessing from this image model folder or run directory")
    p.add_argument("--encoder", help="encoder weights: a CT-CLIP checkpoint (.pt) or rad3d safetensors")
    p.add_argument("--encoder-config", help="encoder config name or JSON file (default: CT-CLIP's public config)")
    p.add_argument("--preprocess", help="PreprocessConfig as a JSON file (default: CT-CLIP's 480x480x240 grid)")
    p.add_argument("--split", action="append", help="only these splits (repeatable; default all)")
    p.add_argument("--workers", type=int, default=2, help="reader processes (default 2)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import source_from_args
    from engine.embedding import embed_with_encoder, embed_with_image_model
    from engine.encoders import DEFAULT_ENCODER, load_encoder_config
    from engine.errors import ConfigError, DatasetError
    from engine.model_configs import read_preprocess_config
    from engine.shards import Shard

    data = source_from_args(args)
    shard = Shard.launched(args.device)  # shard 0 of 1 without a launcher
    device = shard.device
    if args.image_model:
        summary = embed_with_image_model(data, args.out, args.image_model, splits=tuple(args.split or ()),
                                         workers=args.workers, device=device, shard=shard)
    elif args.encoder:
        pp = read_preprocess_config(args.preprocess or None)
        encoder_config = load_encoder_config(args.encoder_config).to_dict()
        _, summary = embed_with_encoder(data, args.out, DEFAULT_ENCODER, encoder_config,
                                        args.encoder, pp, splits=tuple(args.split or ()), workers=args.workers,
                                        device=device, shard=shard)
    else:
        raise ConfigError("give --image-model IMAGE (or a run) or --encoder WEIGHTS")
    if not shard.is_main:  # the main process reports for all shards
        return 1 if summary.failed else 0
    print(f"{summary.done} embedded, {summary.skipped} already cached, {len(summary.failed)} failed -> {args.out}")
    if summary.failed:
        raise DatasetError(f"{len(summary.failed)} volume(s) could not be embedded", data.root,
                           problems=[f"{n}: {e}" for n, e in summary.failed.items()])
    return 0
