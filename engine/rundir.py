"""The run directory: everything needed to run inference, and nothing else.

    RUN/config.json              RunConfig below (component configs, paths, settings)
    RUN/encoder.safetensors      encoder weights (CT-CLIP key names), unless config points elsewhere
    RUN/classifier.safetensors   AbnormalityHead weights
    RUN/connector.safetensors    the trained prefix connector
    RUN/decoder.safetensors      only when the decoder itself was trained (V-1, baseline, LoRA)
    RUN/metrics.csv              the training log (not needed for inference)

Paths in config.json are relative to RUN unless absolute, so a run folder can be moved together
with what it references (the demo keeps its decoder next to its runs), while a multi-GB CT-CLIP
checkpoint or LLaMA folder can stay where the user keeps it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import JsonConfig, coerce_nested, read_json, write_json
from engine.errors import ConfigError
from engine.labels import LabelSet
from engine.model_configs import AbnormalityHeadConfig, GenerationSettings, PreprocessConfig, ReportGeneratorConfig
from engine.provenance import Provenance, describe_decoder, describe_encoder

RUN_FORMAT = "rad3d-run/1"
CONFIG_FILE = "config.json"
DOMAIN_GUARD_FILE = "domain_guard.safetensors"


@dataclass
class EncoderSpec(JsonConfig):
    name: str  # a name in engine.encoders.ENCODERS
    config: dict  # that encoder family's own config (e.g. CTViTConfig) as a dict, read by the registry
    weights: str  # file (relative to the run) or absolute path


@dataclass
class ClassifierSpec(JsonConfig):
    config: AbnormalityHeadConfig
    weights: str
    thresholds: list[float]  # per-label decision thresholds chosen on validation
    # Per-label AUROC on the validation split (None where undefined), so a reader of the
    # probabilities can tell findings the classifier separates from ones it does not; None: unknown.
    valid_auroc: list[float | None] | None = None

    def __post_init__(self):
        coerce_nested(self)


@dataclass
class DecoderSpec(JsonConfig):
    path: str  # a local Hugging Face causal LM folder
    gguf_file: str | None = None  # a GGUF file inside `path`, de-quantised on load
    weights: str | None = None  # trained decoder weights (V-1, baseline, LoRA adapters)


@dataclass
class DomainGuardSpec(JsonConfig):
    """The run's guard against scans it was never made for (engine.domain): the feature guard's
    tensors, its threshold and how that was calibrated, and whether the chest body-region check
    applies (it does for a chest label set)."""

    weights: str = DOMAIN_GUARD_FILE
    threshold: float = float("inf")
    calibration: dict | None = None
    body_region: bool = True


IMAGE_MODEL_FORMAT = "rad3d-image-model/1"
IMAGE_MODEL_FILE = "image_model.json"


def _formatted(kind: str, expected: str):
    """_json_in / _json_out of a file config written with a "format" key first."""

    def read(cls, data):
        if not isinstance(data, dict) or data.get("format") != expected:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"not a rad3d {kind} (format {found!r}, expected {expected!r})")
        return {k: v for k, v in data.items() if k != "format"}

    def write(self, data: dict) -> dict:
        return {"format": expected, **data}

    return classmethod(read), write


@dataclass
class ImageModelConfig(JsonConfig):
    """The frozen image model of a run on its own: encoder + classifier + preprocessing + label set.
    `rad3d train-encoder` / `train-classifier` write it (IMAGE/image_model.json with weights beside
    it); `rad3d embed` and `rad3d train` read it, and every run made from it repeats it."""

    label_set: LabelSet
    preprocess: PreprocessConfig
    encoder: EncoderSpec
    classifier: ClassifierSpec
    notes: dict = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)  # empty: written before it was recorded
    # Set by `rad3d train-classifier --tune-last-layer`: which encoder layer was fine-tuned and the
    # digests of the base image model and encoder weights it started from. Not written when None.
    tuned_last_layer: dict | None = None

    _json_in, _json_write = _formatted("image model", IMAGE_MODEL_FORMAT)

    def _json_out(self, data: dict) -> dict:
        if data.get("tuned_last_layer") is None:
            data = {k: v for k, v in data.items() if k != "tuned_last_layer"}
        return self._json_write(data)

    def __post_init__(self):
        coerce_nested(self)


def save_image_model(root: str | Path, config: ImageModelConfig) -> Path:
    """Write IMAGE/image_model.json (weights paths in it are relative to IMAGE unless absolute)."""
    return write_json(Path(root) / IMAGE_MODEL_FILE, config.to_dict())


def load_image_model(root: str | Path) -> tuple[Path, ImageModelConfig]:
    """(folder, config) with weights paths made absolute; accepts an image-model folder or a run
    directory (whose image model is the same thing)."""
    root = Path(root).resolve()
    if (root / IMAGE_MODEL_FILE).is_file():
        path = root / IMAGE_MODEL_FILE
        cfg = ImageModelConfig.from_dict(read_json(path, "image model config"), path)
    else:
        run = open_run(root, check=False).config
        cfg = ImageModelConfig(run.label_set, run.preprocess, run.encoder, run.classifier, {}, run.provenance)
    for spec in (cfg.encoder, cfg.classifier):
        p = Path(spec.weights)
        spec.weights = str(p if p.is_absolute() else (root / p).resolve())
        if not Path(spec.weights).is_file():
            raise ConfigError(f"image model weights missing: {spec.weights}", root)
    return root, cfg


@dataclass
class RunConfig(JsonConfig):
    variant: str
    label_set: LabelSet
    preprocess: PreprocessConfig
    encoder: EncoderSpec
    classifier: ClassifierSpec
    generator: ReportGeneratorConfig
    decoder: DecoderSpec
    connector_weights: str = "connector.safetensors"
    report_section: str = "findings"  # the report section the connector was trained to write
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # {} in a file: the defaults
    notes: dict = field(default_factory=dict)  # how it was made: versions, commands, settings
    provenance: Provenance = field(default_factory=Provenance)  # what from (empty: an older run)
    domain_guard: DomainGuardSpec | None = None  # None: an older run, only the body-region check applies

    _json_in, _json_out = _formatted("run config", RUN_FORMAT)

    def __post_init__(self):
        coerce_nested(self)


@dataclass
class RunDir:
    root: Path
    config: RunConfig

    def resolve(self, path: str | None) -> Path | None:
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (self.root / p).resolve()

    def required_files(self) -> dict[str, Path]:
        """What inference reads, by role; every one must exist."""
        cfg = self.config
        files = {
            "encoder weights": self.resolve(cfg.encoder.weights),
            "classifier weights": self.resolve(cfg.classifier.weights),
            "connector weights": self.resolve(cfg.connector_weights),
            "decoder": self.resolve(cfg.decoder.path),
        }
        if cfg.decoder.weights:
            files["decoder weights"] = self.resolve(cfg.decoder.weights)
        if cfg.domain_guard is not None:
            files["domain guard"] = self.resolve(cfg.domain_guard.weights)
        return files  # type: ignore[return-value]

    def check(self) -> None:
        """Raise one ConfigError naming every missing file of the run."""
        missing = [f"{role} ({path})" for role, path in self.required_files().items() if not path.exists()]
        if missing:
            raise ConfigError("run directory is incomplete, missing: " + "; ".join(missing), self.root)


def save_run_config(root: str | Path, config: RunConfig) -> Path:
    return write_json(Path(root) / CONFIG_FILE, config.to_dict())


def save_domain_guard(run: RunDir, guard) -> RunDir:
    """Store an engine.domain.FeatureGuard with the run: its tensors beside config.json, its
    threshold and calibration in it."""
    from safetensors.torch import save_file

    save_file(guard.to_tensors(), str(run.root / DOMAIN_GUARD_FILE))
    config = dataclasses.replace(run.config, domain_guard=DomainGuardSpec(
        DOMAIN_GUARD_FILE, float(guard.threshold), guard.calibration, run.config.domain_guard.body_region
        if run.config.domain_guard else True))
    save_run_config(run.root, config)
    return open_run(run.root)


def load_domain_guard(run: RunDir):
    """The run's engine.domain.FeatureGuard, or None for a run made before guards existed."""
    from engine.domain import FeatureGuard
    from engine.weights import read_safetensors

    spec = run.config.domain_guard
    if spec is None:
        return None
    tensors = read_safetensors(run.resolve(spec.weights))
    return FeatureGuard.from_tensors(tensors, {"threshold": spec.threshold, "calibration": spec.calibration})


def read_run_config(root: str | Path) -> tuple[Path, object]:
    """(RUN/config.json, its parsed JSON) of any kind of run; ConfigError naming the folder or file."""
    root = Path(root)
    path = root / CONFIG_FILE
    if not root.is_dir():
        raise ConfigError("no such run directory", root)
    try:
        return path, json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("not a run directory (config.json missing)", root) from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config.json is not valid JSON ({err})", path) from None


def open_run(root: str | Path, *, check: bool = True) -> RunDir:
    root = Path(root)
    path, data = read_run_config(root)
    run = RunDir(root.resolve(), RunConfig.from_dict(data, path))
    if check:
        run.check()
    return run


def write_run(
    root: str | Path,
    *,
    label_set,
    preprocess,
    encoder_name: str,
    encoder,
    classifier,
    thresholds,
    generator,
    decoder_path: str | Path,
    gguf_file: str | None = None,
    generation=None,
    notes: dict | None = None,
    encoder_weights: str | Path | None = None,
    relative_decoder: bool = False,
    report_section: str = "findings",
    valid_auroc=None,
    provenance: Provenance | None = None,
) -> RunDir:
    """Save trained modules and their configs as a run directory that `InferenceSession.load` reads.

    encoder_weights: an existing weights file (e.g. a CT-CLIP checkpoint) to reference instead of
    writing the encoder's weights into the run. The decoder is referenced by path; its weights are
    written only when they were trained (V-1, baseline, LoRA). relative_decoder stores the decoder
    path relative to the run, for a run shipped together with its decoder (the demo). provenance: what
    the run was made from (its datasets); the encoder and decoder records are filled in from the
    files when it lacks them."""
    from safetensors.torch import save_file

    from engine.encoders.checkpoint import save_encoder_weights

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def tensors(module) -> dict:
        return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}

    if encoder_weights is None:
        save_encoder_weights(encoder, root / "encoder.safetensors")
        encoder_file = "encoder.safetensors"
    else:
        encoder_file = str(Path(encoder_weights).resolve())
    save_file(tensors(classifier), str(root / "classifier.safetensors"))
    save_file(tensors(generator.connector), str(root / "connector.safetensors"))
    decoder_weights = None
    if generator.config.decoder_mode != "frozen":
        trained = {k: v for k, v in generator.decoder.named_parameters() if v.requires_grad}
        save_file({k: v.detach().cpu().contiguous() for k, v in trained.items()}, str(root / "decoder.safetensors"))
        decoder_weights = "decoder.safetensors"
    decoder_path = Path(decoder_path).resolve()
    decoder_ref = os.path.relpath(decoder_path, root.resolve()) if relative_decoder else str(decoder_path)
    provenance = provenance or Provenance()
    if provenance.encoder is None:
        provenance = dataclasses.replace(provenance, encoder=describe_encoder(Path(encoder_file) if encoder_weights
                                                                             else root / encoder_file))
    if provenance.decoder is None:
        provenance = dataclasses.replace(provenance, decoder=describe_decoder(decoder_path, gguf_file=gguf_file))

    config = RunConfig(
        variant=generator.config.variant,
        label_set=label_set,
        preprocess=preprocess,
        encoder=EncoderSpec(name=encoder_name, config=encoder.cfg.to_dict(), weights=encoder_file),
        classifier=ClassifierSpec(
            config=classifier.config, weights="classifier.safetensors", thresholds=[float(t) for t in thresholds],
            valid_auroc=json_floats(valid_auroc),
        ),
        generator=generator.config,
        decoder=DecoderSpec(path=decoder_ref, gguf_file=gguf_file, weights=decoder_weights),
        report_section=report_section,
        generation=generation or GenerationSettings(),
        notes=dict(notes or {}),
        provenance=provenance,
    )
    save_run_config(root, config)
    return open_run(root)


def json_floats(values) -> list[float | None] | None:
    """JSON-safe per-label numbers: NaN (undefined, e.g. no positive case) becomes None."""
    if values is None:
        return None
    return [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]
