"""`rad3d train-classifier`: the abnormality head on cached latents, thresholds, report, logits into the cache."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args
from engine.data.source import add_data_arguments
from engine.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-classifier",
        help="train the 18-finding classifier head on cached latents and write its logits into the cache",
        description="Train the AbnormalityHead on the embedding cache's latents of the train split (class-weighted "
        "BCE, positive weights from the training prevalence), keep the epoch with the lowest validation loss, choose "
        "per-class thresholds on valid, and write IMAGE (image_model.json, classifier.safetensors, "
        "classifier_report.csv/.md on valid and test). Then every cached case gets its logits (for V-3). Name the "
        "encoder the cache was made with: --image-model IMAGE0, or --encoder WEIGHTS --encoder-config NAME. "
        "--tune-last-layer (the paper's out-of-domain adaptation): fine-tune the last layer of --image-model's "
        "encoder and a new head for the data's label set (e.g. --label-set inspect-like) on the volumes themselves; "
        "IMAGE gets its own encoder weights, and image_model.json records the tuning and the base's digest.",
    )
    p.add_argument("--cache", help="embedding cache folder (from `rad3d embed`); required unless --tune-last-layer")
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="image model folder to write")
    p.add_argument("--image-model", help="take encoder and preprocessing from this image model folder")
    p.add_argument("--encoder", help="encoder weights the cache was made with (CT-CLIP .pt or rad3d safetensors)")
    p.add_argument("--encoder-config", help="encoder config name or JSON (default: CT-CLIP's public config)")
    p.add_argument("--preprocess", help="PreprocessConfig JSON the cache was made with (default CT-CLIP's grid)")
    from training.configs import ClassifierTrainConfig

    add_config_arguments(p, ClassifierTrainConfig)  # the training settings, with their defaults
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import source_from_args
    from engine.labels import load_label_set
    from training.classifier_recipe import ClassifierTrainConfig, train_classifier
    from training.image_model_common import REPORT_MD, macro_auroc

    config = config_from_args(ClassifierTrainConfig, args)
    if config.tune_last_layer:
        return _run_tuning(args, config)
    if not args.cache:
        raise ConfigError("--cache is required (the embedding cache whose latents the head trains on)")
    result = train_classifier(
        args.cache, source_from_args(args), args.out,
        image_model=args.image_model,
        encoder_weights=args.encoder,
        encoder_config=args.encoder_config,
        preprocess=args.preprocess,
        label_set=load_label_set(args.label_set) if args.label_set else None,
        config=config,
    )
    print(f"best epoch {result.fit.best_epoch} of {result.fit.epochs_run} (valid loss {result.fit.best_valid_loss:.4f}); "
          f"macro AUROC valid {macro_auroc(result.report, 'valid'):.3f}, test {macro_auroc(result.report, 'test'):.3f}")
    print(f"wrote {result.out} ({REPORT_MD}); logits of {result.logits_written} cached cases -> {args.cache}")
    return 0


def _run_tuning(args: argparse.Namespace, config) -> int:
    """--tune-last-layer: checked before any volume or weight is read."""
    from engine.data import source_from_args
    from engine.labels import load_label_set
    from training.image_model_common import REPORT_MD, macro_auroc
    from training.last_layer_recipe import tune_last_layer

    if not args.image_model:
        raise ConfigError("--tune-last-layer needs --image-model (the base whose encoder's last layer is tuned)")
    if args.cache or args.encoder:
        raise ConfigError("--tune-last-layer trains on the volumes and writes a new encoder: give no --cache or "
                          "--encoder (embed again with the new image model afterwards)")
    result = tune_last_layer(source_from_args(args), args.out, image_model=args.image_model,
                             label_set=load_label_set(args.label_set) if args.label_set else None, config=config)
    print(f"best epoch {result.notes['best_epoch']} (valid loss {result.notes['best_valid_loss']:.4f}); macro AUROC "
          f"valid {macro_auroc(result.report, 'valid'):.3f}, test {macro_auroc(result.report, 'test'):.3f}")
    print(f"wrote {result.out} ({REPORT_MD}); tuned {result.notes['tuned_last_layer']['layer']}")
    return 0
