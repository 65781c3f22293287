"""`rad3d demo build`: the embedded demo model, made only by the project's own commands.

    $RAD3D_HOME/demo/llm/smollm2-135m-instruct   the frozen decoder (converted from its registry package)
    $RAD3D_HOME/demo/phantoms                    synthetic chest CTs (deterministic by seed)
    $RAD3D_HOME/demo/image                       small CT-ViT + classifier (image_model.json)
    $RAD3D_HOME/demo/cache                       latents + logits of every phantom
    $RAD3D_HOME/demo/runs/{v3,v2}                the V-3 connector (the method) and its V-2 twin
    $RAD3D_HOME/demo/eval                        their evaluation on the test split (`rad3d demo evaluate`)

When the repository ships weights made by this very recipe (training/demo/shipped.py), the build
installs them instead of training: it converts the decoder, writes only the test split's phantoms
and embeds them, a few minutes on 2 cores. `from_scratch=True` (`rad3d demo build --from-scratch`)
writes all phantoms and trains everything with the project's own commands, about two hours on 2
cores. Each step is skipped when its output is already there, so a build interrupted at any point
continues where it stopped. The connectors train in resumable checkpoints (`--time-limit` spreads
the long CPU run over several calls). The demo learns the Impression section: on 2 CPU cores a
training step over the ~220-token findings costs ~25–40 s, over the ~30-token impression a few s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DemoRecipe:
    cases: int = 1200
    seed: int = 0
    scale: float = 4.0
    encoder_epochs: int = 40
    encoder_vq_epochs: int = 1
    encoder_config: str = "demo-windows"
    preprocess: str = "windowed"  # a name of training.encoder_recipe.DEMO_PREPROCESSING
    token_loss_weight: float = 1.0
    section: str = "impression"
    variants: tuple[str, ...] = ("v3", "v2")
    connector: dict = field(default_factory=lambda: dict(
        prefix_len=10, clip_len=10, layers=2, heads=8, batch_size=8, lr=1e-3, epochs=6,
        schedule="linear", save_every_steps=25, max_report_tokens=64,
    ))


@dataclass(frozen=True)
class DemoPaths:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "demo"

    @property
    def decoder(self) -> Path:  # "llm/": the folder name the shipped run configs point to
        return self.root / "llm" / "smollm2-135m-instruct"

    @property
    def data(self) -> Path:
        return self.root / "phantoms"

    @property
    def image(self) -> Path:
        return self.root / "image"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def run(self, variant: str) -> Path:
        return self.root / "runs" / variant

    @property
    def evaluation(self) -> Path:  # eval/{v3,v2}: `rad3d evaluate` folders; eval/comparison.json: V-3 − V-2
        return self.root / "eval"


SHIPPED_SPLITS = ("test",)  # what a build from shipped weights writes: the held-out cases only


def build_demo(home: Path, recipe: DemoRecipe = DemoRecipe(), *, time_limit_s: float | None = None,
               progress: bool = True, say=print, from_scratch: bool = False) -> dict[str, Path]:
    """Build (or continue building) the demo; returns the finished runs by variant."""
    import time

    from training.demo.shipped import INSTALLED_MARK, install_shipped, shipped_for
    from training.demo.smollm2 import ensure_smollm2

    start = time.monotonic()
    paths = DemoPaths(Path(home))
    manifest = None if from_scratch else shipped_for(recipe)
    say(f"[1/5] decoder: SmolLM2-135M-Instruct -> {paths.decoder}")
    ensure_smollm2(paths.decoder)

    finished = {v: paths.run(v) for v in recipe.variants if (paths.run(v) / "config.json").is_file()}
    if manifest is not None and len(finished) == len(recipe.variants) and not (paths.root / INSTALLED_MARK).is_file():
        say("[2/5] the demo home holds a finished build of its own (--from-scratch); using it")
        return finished
    if manifest is not None:
        say(f"[2/5] phantoms: the {', '.join(SHIPPED_SPLITS)} split of {recipe.cases} cases, seed {recipe.seed}, "
            f"scale {recipe.scale} -> {paths.data}")
        ensure_phantoms(paths, recipe, progress=progress, splits=SHIPPED_SPLITS)
        say(f"[3/5] image model and {', '.join(manifest['variants'])} connectors: the shipped weights -> {paths.root}")
        runs = install_shipped(paths, manifest)
        say(f"[4/5] embedding cache of the phantoms -> {paths.cache}")
        _embed(paths, progress)
        say("[5/5] done: " + ", ".join(f"{v} {p}" for v, p in runs.items()))
        return runs
    return _build_from_scratch(paths, recipe, start, time_limit_s, progress, say)


def _embed(paths: DemoPaths, progress: bool) -> None:
    from engine.embedding import embed_with_image_model
    from engine.errors import DatasetError

    summary = embed_with_image_model(paths.data, paths.cache, paths.image, progress=progress)
    if summary.failed:
        raise DatasetError(f"{len(summary.failed)} phantom(s) could not be embedded", paths.data,
                           problems=[f"{n}: {e}" for n, e in summary.failed.items()])


def _build_from_scratch(paths: DemoPaths, recipe: DemoRecipe, start: float, time_limit_s, progress, say):
    import time

    from engine.errors import ConfigError
    from training.configs import EncoderTrainConfig, demo_preprocess
    from training.demo.shipped import INSTALLED_MARK
    from training.encoder_recipe import train_encoder

    if (paths.root / INSTALLED_MARK).is_file():
        raise ConfigError("this demo home holds the shipped weights; build from scratch in another --home "
                          "(or delete this folder)", paths.root)
    say(f"[2/5] phantoms: {recipe.cases} cases, seed {recipe.seed}, scale {recipe.scale} -> {paths.data}")
    ensure_phantoms(paths, recipe, progress=progress)

    say(f"[3/5] image model (small CT-ViT + classifier) -> {paths.image}")
    if not (paths.image / "image_model.json").is_file():
        train_encoder(paths.data, paths.image,
                      EncoderTrainConfig(encoder_config=recipe.encoder_config,
                                         preprocess=demo_preprocess(recipe.preprocess),
                                         epochs=recipe.encoder_epochs, vq_epochs=recipe.encoder_vq_epochs,
                                         token_loss_weight=recipe.token_loss_weight, seed=recipe.seed),
                      resume=True, cache_out=paths.cache, progress=progress)

    runs: dict[str, Path] = {}
    for i, variant in enumerate(recipe.variants):
        out = paths.run(variant)
        say(f"[{4 + i}/{3 + len(recipe.variants)}] {variant} connector on the frozen decoder -> {out}")
        if (out / "config.json").is_file():
            runs[variant] = out
            continue
        remaining = None if time_limit_s is None else time_limit_s - (time.monotonic() - start)
        if remaining is not None and remaining <= 0:
            say("time limit reached; run the same command again to continue")
            break
        result = _train_connector(paths, recipe, variant, remaining, progress)
        if result.finished:
            runs[variant] = out
        else:
            say(f"{variant}: stopped at step {result.step} of {result.total_steps}; run again to continue")
            break
    return runs


def ensure_phantoms(paths: DemoPaths, recipe: DemoRecipe, *, progress: bool = True,
                    splits: tuple[str, ...] = ()) -> Path:
    """The recipe's phantom dataset, all splits or only `splits` (written once; a half-written one is
    redone, never used; one lacking a needed split is rewritten)."""
    import shutil

    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    needed = set(splits or ("train", "valid", "test"))
    if (paths.data / "reports.csv").is_file() and not needed <= _written_splits(paths.data):
        shutil.rmtree(paths.data)
    if not (paths.data / "reports.csv").is_file():
        partial = paths.data.with_name(paths.data.name + ".partial")
        write_dataset(SynthConfig(n=recipe.cases, seed=recipe.seed, scale=recipe.scale, workers=2), partial,
                      force=True, progress=progress, only_splits=tuple(splits))
        partial.rename(paths.data)
    return paths.data


def _written_splits(data: Path) -> set[str]:
    import json

    try:
        truth = json.loads((data / "phantom_truth.json").read_text())
    except (OSError, json.JSONDecodeError):
        return set()
    return set(truth.get("splits_written", ("train", "valid", "test")))


def _train_connector(paths: DemoPaths, recipe: DemoRecipe, variant: str, time_limit_s, progress):
    from training.configs import TrainConfig
    from training.connector_recipe import train_connector

    config = TrainConfig(variant=variant, data=str(paths.data), cache=str(paths.cache), decoder=str(paths.decoder),
                         image_model=str(paths.image), out=str(paths.run(variant)), section=recipe.section,
                         seed=recipe.seed, **recipe.connector)
    return train_connector(config, resume=True, time_limit_s=time_limit_s, progress=progress)
