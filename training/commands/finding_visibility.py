"""`rad3d finding-visibility`: per finding, the planted object's size and the contrast that survives
the demo encoder's grid (engine.synth.visibility)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finding-visibility",
        help="measure how much of each planted finding survives on the demo encoder's grid",
        description="For each of the 18 findings and N phantoms (seeds FIRST..FIRST+N-1, rendered at the demo "
        "recipe's scale): the same patient without noise with and without the finding, both preprocessed to the "
        "demo grid; reports the planted size, the voxels that change by more than the case's own noise SD (on the "
        "phantom's grid and on the encoder's), the share of one CT-ViT patch they fill, and the largest and mean "
        "change in HU. Example: rad3d finding-visibility --cases 6 --out visibility.json",
    )
    p.add_argument("--cases", type=int, default=6, help="phantoms per finding (default 6)")
    p.add_argument("--first-seed", type=int, default=100000, help="seed of the first phantom (default 100000)")
    p.add_argument("--scale", type=float, default=None, help="phantom scale (default: the demo recipe's)")
    p.add_argument("--preprocess", default="windowed", help="demo preprocessing name (plain or windowed)")
    p.add_argument("--encoder-config", default="demo-windows", help="encoder config whose patch size is reported")
    p.add_argument("--findings", nargs="+", help="only these findings (default: all 18)")
    p.add_argument("--out", help="also write the per-case and summary JSON here")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from engine.encoders import load_encoder_config
    from engine.errors import ConfigError
    from engine.labels import ct_rate
    from engine.synth.findings import canonical_finding
    from engine.synth.visibility import measure_case, summarise, visibility_markdown
    from training.configs import demo_preprocess
    from training.demo.build import DemoRecipe

    if args.cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {args.cases}")
    config = demo_preprocess(args.preprocess)
    enc = load_encoder_config(args.encoder_config)
    patch_voxels = enc.patch_size * enc.patch_size * enc.temporal_patch_size
    sx, sy, sz = config.spacing_mm
    patch_mm = (enc.patch_size * sx, enc.patch_size * sy, enc.temporal_patch_size * sz)
    scale = DemoRecipe().scale if args.scale is None else args.scale
    names = [canonical_finding(f) for f in args.findings] if args.findings else ct_rate().names
    jobs = [(n, args.first_seed + i) for n in names for i in range(args.cases)]
    cases = [measure_case(n, s, config, scale) for n, s in tqdm(jobs, desc="visibility", unit="case")]
    summary = summarise(cases, config, patch_voxels)
    if args.out:
        Path(args.out).write_text(json.dumps({"scale": scale, "preprocess": config.to_dict(), "patch_mm": patch_mm,
                                              "summary": summary, "cases": [c.to_dict() for c in cases]}, indent=1))
    print(visibility_markdown(summary, config, patch_mm))
    return 0
