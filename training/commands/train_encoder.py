"""`rad3d train-encoder`: the demo's small CT-ViT + classifier head, trained end to end on phantoms."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args, field_help
from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    from training.configs import EncoderTrainConfig

    p = subparsers.add_parser(
        "train-encoder",
        help="train a small CT-CLIP-style encoder and classifier end to end (the embedded demo's image model)",
        description="Preprocess every volume once to the demo grid, train the CT-ViT (config --encoder-config) and "
        "the AbnormalityHead end to end with class-weighted BCE (plus, on phantoms, a per-token finding loss from "
        "DIR/phantom_truth.json), fit the VQ codebook to the trained encoder "
        "(k-means) and fine-tune through it, then write IMAGE (image_model.json, encoder.safetensors with CT-CLIP "
        "key names, classifier.safetensors with thresholds chosen on valid, classifier_report.csv/.md, "
        "metrics.csv). A checkpoint is written every epoch; --resume continues a killed run.",
    )
    add_data_arguments(p, help="dataset folder (flat layout or CT-RATE's released tree), e.g. from "
                       "`rad3d synth --n 400 --scale 4`")
    p.add_argument("--out", required=True, help="image model folder to write")
    p.add_argument("--preprocess", help=field_help(EncoderTrainConfig, "preprocess"))
    add_config_arguments(p, EncoderTrainConfig)  # every training setting, with its default
    p.add_argument("--workers", type=int, default=2, help="processes reading and preprocessing volumes")
    p.add_argument("--tensor-cache", help="keep the preprocessed volumes here (reused by a rerun)")
    p.add_argument("--cache", help="also write every case's latent and logits into this embedding cache")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: this small model's ops ran far slower with 2 on 2 shared cores)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from engine.data import source_from_args
    from engine.errors import ConfigError
    from engine.preprocess import PreprocessConfig
    from training.configs import EncoderTrainConfig
    from training.encoder_recipe import train_encoder
    from training.image_model_common import REPORT_MD

    given = {}
    if args.preprocess and args.preprocess.startswith("demo-") and not Path(args.preprocess).is_file():
        from training.configs import demo_preprocess

        given["preprocess"] = demo_preprocess(args.preprocess.removeprefix("demo-"))
    elif args.preprocess:
        try:
            given["preprocess"] = PreprocessConfig.from_dict(json.loads(Path(args.preprocess).read_text()), args.preprocess)
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read preprocessing config ({err})", args.preprocess) from None
    config = config_from_args(EncoderTrainConfig, args, **given)
    result = train_encoder(source_from_args(args), args.out, config, resume=args.resume, workers=args.workers,
                           tensor_cache=args.tensor_cache, cache_out=args.cache,
                           threads=args.threads)
    auroc = result.notes["macro_auroc"]
    print(f"{result.steps} steps in {result.notes['train_seconds']:.0f} s; macro AUROC valid {auroc['valid']:.3f}, "
          f"test {auroc['test']:.3f}")
    print(f"wrote {result.out} ({REPORT_MD})" + (f"; latents and logits -> {args.cache}" if args.cache else ""))
    return 0
