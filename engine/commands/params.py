"""`rad3d params`: trainable and frozen parameter counts of a variant on a shipped decoder architecture,
built on the meta device (shapes only: no weights are read or allocated)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "params",
        help="count trainable and frozen parameters of a report-generator variant (no weights needed)",
        description="Builds the report generator of a variant on a decoder architecture config on the meta "
        "device and prints its trainable and frozen parameter counts. Example: "
        "rad3d params --variant v3 --decoder-config llama-3.2-1b",
    )
    parser.add_argument("--variant", default="v3", help="v1, v2, v3, linear, linear-prefix, r2gengpt or baseline")
    parser.add_argument(
        "--decoder-config", default="llama-3.2-1b", help="a shipped decoder architecture name or a config.json path"
    )
    parser.add_argument("--llm-config", dest="decoder_config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # older name
    parser.add_argument("--prefix-len", type=int, default=10, help="prefix tokens (default 10)")
    parser.add_argument("--clip-len", type=int, default=10, help="tokens the input is projected to (default 10)")
    parser.add_argument("--layers", type=int, default=8, help="transformer connector layers (default 8)")
    parser.add_argument("--d-embed", type=int, default=512, help="image latent size (default 512)")
    parser.add_argument("--n-labels", type=int, default=18, help="classifier labels (default 18)")
    parser.add_argument("--vision", choices=["vit3d"], default=None,
                        help="also count M3D's image side at full size for this decoder: the vit3d encoder "
                        "(frozen) and the spatial-pooling connector (768 → the decoder's width, trainable)")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters on the decoder (counted on their own row)")
    parser.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default: LoraSettings' 8)")
    parser.add_argument("--lora-alpha", type=int, default=None, help="LoRA alpha (default: LoraSettings' 16)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.decoders import LoraSettings, build_meta_causal_lm
    from engine.model import build_report_generator
    from engine.variants import get_variant

    spec = get_variant(args.variant)
    decoder = build_meta_causal_lm(args.decoder_config)
    lora = None
    if args.lora or args.lora_r is not None or args.lora_alpha is not None:
        given = {k: v for k, v in (("r", args.lora_r), ("alpha", args.lora_alpha)) if v is not None}
        lora = LoraSettings(**given)
    with torch.device("meta"):
        model = build_report_generator(
            spec.name,
            decoder,
            d_embed=args.d_embed,
            n_labels=args.n_labels,
            prefix_len=args.prefix_len,
            clip_len=args.clip_len,
            n_layers=args.layers,
            lora=lora,
        )
        head = AbnormalityHead(AbnormalityHeadConfig(in_dim=args.d_embed, n_labels=args.n_labels))

    def split(params) -> tuple[int, int]:
        params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return trainable, sum(p.numel() for p in params) - trainable

    connector = split(model.connector)
    adapters = [p for n, p in model.decoder.named_parameters() if "lora_" in n]
    adapter_counts = (sum(p.numel() for p in adapters), 0)
    decoder_counts = split(p for n, p in model.decoder.named_parameters() if "lora_" not in n)
    trainable, frozen = model.count_parameters()
    alias = f" (alias {args.variant})" if args.variant.lower() != spec.name else ""
    print(f"variant {spec.name}{alias}: {spec.description}")
    lora_note = f"; LoRA r {lora.r}, alpha {lora.alpha}" if lora is not None else ""
    print(f"decoder {args.decoder_config}; prefix length {model.prefix_len}, connector {model.config.connector.kind}"
          f"{lora_note}")
    rows = [
        ("connector", *connector),
        *([("LoRA adapters", *adapter_counts)] if lora is not None else []),
        ("decoder", *decoder_counts),
        ("total", trainable, frozen),
        ("classifier head (separate, frozen)", 0, sum(p.numel() for p in head.parameters())),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'part':<{width}}  {'trainable':>15}  {'frozen':>15}")
    for name, t, f in rows:
        print(f"{name:<{width}}  {t:>15,}  {f:>15,}  ({human(t)} / {human(f)})")
    if args.vision == "vit3d":
        print_m3d_image_side(model.config.connector.d_llm, split)
    return 0


def print_m3d_image_side(d_llm: int, split) -> None:
    """M3D's full-size vit3d encoder (ViT + mm_vision_proj) and spatial-pooling connector to d_llm,
    built on the meta device."""
    import torch

    from engine.connectors import SpatialPoolingConfig, build_connector
    from engine.encoders import ENCODERS, VIT3D_ENCODER

    with torch.device("meta"):
        encoder = ENCODERS.build(VIT3D_ENCODER)
        connector = build_connector(SpatialPoolingConfig(d_embed=encoder.cfg.hidden_size, token_grid=encoder.cfg.grid,
                                                         d_llm=d_llm))
    rows = [("vit3d encoder (M3D, frozen)", *split(encoder)),
            (f"spatial-pooling connector ({connector.prefix_len} tokens)", *split(connector))]
    width = max(len(r[0]) for r in rows)
    print(f"M3D image side, full size (input 1x32x256x256, {encoder.cfg.n_patches} patch tokens):")
    for name, t, f in rows:
        print(f"{name:<{width}}  {t:>15,}  {f:>15,}  ({human(t)} / {human(f)})")


def human(n: int) -> str:
    """279461888 → '279.46M', 1514907648 → '1.51B'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
