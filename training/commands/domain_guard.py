"""`rad3d domain-guard`: fit a run's guard against scans it was never made for, from the cache."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from engine.data.source import add_data_arguments

    p = subparsers.add_parser(
        "domain-guard",
        help="fit and store a run's domain guard (feature distance to its training scans)",
        description="Fit the Mahalanobis distance of the image latent to the training split's cached latents "
        "(Ledoit-Wolf shrunk covariance), set its threshold on the validation split, and store both with the run "
        "(domain_guard.safetensors and config.json). `rad3d train` does this itself; use this for a run made "
        "before guards existed. `rad3d report` and the app then refuse or mark scans outside the run's domain.",
    )
    p.add_argument("--run", required=True, help="run directory to add the guard to")
    add_data_arguments(p, help="the dataset the run was trained on (with the same overrides, so the splits agree)")
    p.add_argument("--cache", required=True, help="its embedding cache (made by the run's image model)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--valid-split", default="valid")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.cache import EmbeddingCache
    from engine.data import resolve, source_from_args
    from engine.rundir import open_run
    from training.domain_guard import attach_domain_guard

    run_config = open_run(args.run, check=False).config
    dataset = resolve(source_from_args(args), label_set=run_config.label_set, section=None)
    cache = EmbeddingCache.open(args.cache)
    fit = attach_domain_guard(args.run, dataset, cache, train_split=args.train_split, valid_split=args.valid_split)
    print(fit.describe())
    print(f"wrote {args.run}/domain_guard.safetensors")
    return 0
