"""`rad3d demo build`: the embedded demo model, made only by the project's own commands.

    $RAD3D_HOME/demo/llm/smollm2-135m-instruct   the frozen decoder (converted from its registry package)
    $RAD3D_HOME/demo/phantoms                    synthetic chest CTs (deterministic by seed)
    $RAD3D_HOME/demo/image                       small CT-ViT + classifier (image_model.json)
    $RAD3D_HOME/demo/cache                       latents + logits of every phantom
    $RAD3D_HOME/demo/runs/{v3,v2}                the V-3 mapper (the method) and its V-2 twin

Each step is skipped when its output is already there, so a build interrupted at any point
continues where it stopped. The mappers train in resumable checkpoints (`--time-limit` spreads
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
    encoder_epochs: int = 14
    encoder_vq_epochs: int = 1
    token_loss_weight: float = 1.0
    section: str = "impression"
    variants: tuple[str, ...] = ("v3", "v2")
    mapper: dict = field(default_factory=lambda: dict(
        prefix_len=10, clip_len=10, layers=2, heads=8, batch_size=8, lr=1e-3, epochs=8,
        schedule="linear", save_every_steps=25, max_report_tokens=64,
    ))


@dataclass(frozen=True)
class DemoPaths:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "demo"

    @property
    def llm(self) -> Path:
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


def build_demo(home: Path, recipe: DemoRecipe = DemoRecipe(), *, time_limit_s: float | None = None,
               progress: bool = True, say=print) -> dict[str, Path]:
    """Build (or continue building) the demo; returns the finished runs by variant."""
    import time

    from training.demo.llm import ensure_smollm2
    from training.encoder import EncoderTrainConfig, train_encoder

    start = time.monotonic()
    paths = DemoPaths(Path(home))
    say(f"[1/5] decoder: SmolLM2-135M-Instruct -> {paths.llm}")
    ensure_smollm2(paths.llm)

    say(f"[2/5] phantoms: {recipe.cases} cases, seed {recipe.seed}, scale {recipe.scale} -> {paths.data}")
    ensure_phantoms(paths, recipe, progress=progress)

    say(f"[3/5] image model (small CT-ViT + classifier) -> {paths.image}")
    if not (paths.image / "image_model.json").is_file():
        train_encoder(paths.data, paths.image,
                      EncoderTrainConfig(epochs=recipe.encoder_epochs, vq_epochs=recipe.encoder_vq_epochs,
                                         token_loss_weight=recipe.token_loss_weight, seed=recipe.seed),
                      resume=True, cache_out=paths.cache, progress=progress)

    runs: dict[str, Path] = {}
    for i, variant in enumerate(recipe.variants):
        out = paths.run(variant)
        say(f"[{4 + i}/{3 + len(recipe.variants)}] {variant} mapper on the frozen decoder -> {out}")
        if (out / "config.json").is_file():
            runs[variant] = out
            continue
        remaining = None if time_limit_s is None else time_limit_s - (time.monotonic() - start)
        if remaining is not None and remaining <= 0:
            say("time limit reached; run the same command again to continue")
            break
        result = _train_mapper(paths, recipe, variant, remaining, progress)
        if result.finished:
            runs[variant] = out
        else:
            say(f"{variant}: stopped at step {result.step} of {result.total_steps}; run again to continue")
            break
    return runs


def ensure_phantoms(paths: DemoPaths, recipe: DemoRecipe, *, progress: bool = True) -> Path:
    """The recipe's phantom dataset (written once; a half-written one is redone, never used)."""
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    if not (paths.data / "reports.csv").is_file():
        partial = paths.data.with_name(paths.data.name + ".partial")
        write_dataset(SynthConfig(n=recipe.cases, seed=recipe.seed, scale=recipe.scale, workers=2), partial,
                      force=True, progress=progress)
        partial.rename(paths.data)
    return paths.data


def _train_mapper(paths: DemoPaths, recipe: DemoRecipe, variant: str, time_limit_s, progress):
    from training.connector import TrainConfig, train_connector

    config = TrainConfig(variant=variant, data=str(paths.data), cache=str(paths.cache), llm=str(paths.llm),
                         image_model=str(paths.image), out=str(paths.run(variant)), section=recipe.section,
                         seed=recipe.seed, **recipe.mapper)
    return train_connector(config, resume=True, time_limit_s=time_limit_s, progress=progress)
