"""`rad3d synth`: write a synthetic chest CT dataset with known ground truth (CT-RATE layout)."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args, field_help


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write synthetic chest CT phantoms with planted findings, reports and labels",
        description="Write N phantom chest CTs in CT-RATE's format plus phantom_truth.json saying what was "
        "planted where, and vqa.csv: questions about each volume from that truth (--no-vqa: not). "
        "--layout flat (default): volumes/, reports.csv, labels.csv, metadata.csv, splits.csv. "
        "--layout ctrate: CT-RATE's released tree under OUT/dataset (train/, valid/, radiology_text_reports/, "
        "multi_abnormality_labels/, metadata/ with its file names and columns; CT-RATE's valid is our test "
        "split). Example: rad3d synth --out data/ctrate --n 12 --scale 8 --layout ctrate",
    )
    p.add_argument("--out", required=True, help="output directory (must be empty unless --force)")
    from engine.synth.config import SynthConfig

    add_config_arguments(p, SynthConfig)  # every setting, with its default, from SynthConfig
    p.add_argument("--prevalence", nargs="+", metavar="SPEC",
                   help=field_help(SynthConfig, "prevalence"))
    p.add_argument("--layout", choices=("flat", "ctrate"), default="flat",
                   help="flat (rad3d's, default) or ctrate (CT-RATE's released tree and names)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output directory")
    p.add_argument("--only-splits", nargs="+", choices=("train", "valid", "test"), default=(),
                   help="write only these splits' cases (the same volumes the full --n dataset holds; in the ctrate "
                   "layout train is CT-RATE's train folder and test its valid folder)")
    p.add_argument("--no-vqa", dest="vqa", action="store_false",
                   help="do not write vqa.csv (questions about each volume from its truth; `rad3d vqa build` makes it later)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.synth.config import SynthConfig, parse_prevalence
    from engine.synth.writer import write_dataset

    cfg = config_from_args(SynthConfig, args, prevalence=parse_prevalence(args.prevalence, args.domain))
    out = write_dataset(cfg, args.out, force=args.force, only_splits=tuple(args.only_splits), layout=args.layout,
                        vqa=args.vqa)
    print(f"wrote {cfg.n} volumes to {out} ({args.layout} layout)")
    return 0
