"""`rad3d train-encoder`: the demo's small CT-ViT + classifier head, trained end to end on phantoms."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-encoder",
        help="train a small CT-CLIP-style encoder and classifier end to end (the embedded demo's image side)",
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
    p.add_argument("--encoder-config", default="demo-small", help="encoder config name or JSON (default demo-small)")
    p.add_argument("--preprocess", help="PreprocessConfig JSON, or `demo-windowed` (the demo's five HU windows + "
                   "reference channel; use with --encoder-config demo-windows) (default: one CT-CLIP channel, "
                   "3.75 x 3.75 x 7.5 mm, 96 x 96 x 48)")
    p.add_argument("--epochs", type=int, default=12, help="end-to-end epochs before the codebook is fitted (default 12)")
    p.add_argument("--vq-epochs", type=int, default=3, help="fine-tune epochs through the fitted VQ codebook (default 3)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--hidden", type=int, default=0, help="hidden width of the head (0: one Linear layer)")
    p.add_argument("--token-loss-weight", type=float, default=None,
                   help="weight of the auxiliary per-token finding loss, from DIR/phantom_truth.json (default "
                   "from the training config; 0 turns it off, e.g. for data without phantom truth)")
    p.add_argument("--token-pos-weight-max", type=float, default=None,
                   help="cap of the token loss's per-finding positive weight (1-p)/p (default from the training "
                   "config, 10; a nodule marks a few of a volume's tokens, so its uncapped weight is in the hundreds)")
    p.add_argument("--shift-voxels", type=int, nargs=3, metavar=("D", "H", "W"),
                   help="largest random shift of the training augmentation along D, H, W (default from the "
                   "training config, 2 4 4; 0 0 0 turns shifts off)")
    p.add_argument("--standardize-latent", action=argparse.BooleanOptionalAction, default=True,
                   help="train the head on BatchNorm-standardised latents, folded into the saved head (default on)")
    p.add_argument("--seed", type=int, default=0)
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
    from training.encoder import EncoderTrainConfig, train_encoder
    from training.image_side import REPORT_MD

    extra = {}
    if args.token_loss_weight is not None:
        extra["token_loss_weight"] = args.token_loss_weight
    if args.token_pos_weight_max is not None:
        extra["token_pos_weight_max"] = args.token_pos_weight_max
    if args.shift_voxels is not None:
        extra["shift_voxels"] = tuple(args.shift_voxels)
    if args.preprocess and args.preprocess.startswith("demo-") and not Path(args.preprocess).is_file():
        from training.encoder import demo_preprocess

        extra["preprocess"] = demo_preprocess(args.preprocess.removeprefix("demo-")).to_dict()
    elif args.preprocess:
        try:
            extra["preprocess"] = json.loads(Path(args.preprocess).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read preprocessing config ({err})", args.preprocess) from None
    config = EncoderTrainConfig(encoder_config=args.encoder_config, epochs=args.epochs, vq_epochs=args.vq_epochs,
                                lr=args.lr, batch_size=args.batch_size, hidden=args.hidden, seed=args.seed,
                                standardize_latent=args.standardize_latent, **extra)
    result = train_encoder(source_from_args(args), args.out, config, resume=args.resume, workers=args.workers,
                           tensor_cache=args.tensor_cache, cache_out=args.cache,
                           threads=args.threads)
    auroc = result.notes["macro_auroc"]
    print(f"{result.steps} steps in {result.notes['train_seconds']:.0f} s; macro AUROC valid {auroc['valid']:.3f}, "
          f"test {auroc['test']:.3f}")
    print(f"wrote {result.out} ({REPORT_MD})" + (f"; latents and logits -> {args.cache}" if args.cache else ""))
    return 0
