"""`rad3d demo evaluate`: the demo's own evaluation, the one the app's Research tab opens on. Each
demo run is evaluated on the held-out test split (`rad3d evaluate`, every metric with its 95%
bootstrap interval) into eval/<variant>, then the method is compared with its twin (`rad3d compare
eval/v2 eval/v3`: V-3 − V-2, paired bootstrap) into eval/comparison.json. A finished part is kept,
so an interrupted call continues where it stopped."""

from __future__ import annotations

from pathlib import Path


def evaluate_demo(paths, variants: tuple[str, ...], *, progress: bool = True, say=print,
                  resamples: int = 5000, limit: int | None = None) -> Path:
    """Evaluate the finished runs `variants` (the method first, its reference second) of the demo
    home `paths` (training.demo.build.DemoPaths); returns the evaluation folder."""
    from engine.data.source import DataSource
    from engine.errors import ConfigError
    from study.metrics.paired import compare_evaluations
    from study.report_card import write_comparison
    from training.configs import EvaluateConfig
    from training.evaluate import evaluate_run

    missing = [v for v in variants if not (paths.run(v) / "config.json").is_file()]
    if missing:
        raise ConfigError(f"the demo has no finished run {', '.join(missing)}: run `rad3d demo build` first",
                          paths.root / "runs")
    out = paths.evaluation
    for variant in variants:
        folder = out / variant
        if (folder / "metrics.json").is_file():
            continue
        say(f"evaluating {variant} on the test split -> {folder}")
        evaluate_run(EvaluateConfig(run=str(paths.run(variant)), data=DataSource(root=str(paths.data)),
                                    cache=str(paths.cache), out=str(folder), split="test", run_name=variant,
                                    resamples=resamples, limit=limit), progress=progress)
    if not (out / "comparison.json").is_file() and len(variants) >= 2:
        method, reference = variants[0], variants[1]
        say(f"comparing {method} with {reference} (paired bootstrap) -> {out / 'comparison.json'}")
        write_comparison(compare_evaluations(out / reference, out / method, resamples, progress=progress), out)
    return out
