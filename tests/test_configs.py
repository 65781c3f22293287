"""Typed configs (engine/config.py): every config dataclass round-trips JSON through the one generic
reader, a bad or unknown key is one error naming the file and the key, the shipped demo's run configs
read and write back byte for byte (so the manifest's sha256 holds), and each command's options are
generated from its config's fields with the dataclass's defaults."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import json
import typing
from pathlib import Path

import pytest

from engine.config import (
    JsonConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
)
from engine.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "training" / "demo" / "weights"


def _all_config_classes() -> list[type]:
    import engine.cache  # noqa: F401
    import engine.decoders.lora  # noqa: F401
    import engine.encoders.ctvit  # noqa: F401
    import engine.multimodal_run  # noqa: F401
    import engine.rundir  # noqa: F401
    import engine.synth.config  # noqa: F401
    import study.readers.service  # noqa: F401
    import training.checkpointing  # noqa: F401
    import training.configs  # noqa: F401
    import ui.app  # noqa: F401
    import ui.reader_study  # noqa: F401

    seen, todo = [], list(JsonConfig.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo += cls.__subclasses__()
    return sorted(seen, key=lambda c: f"{c.__module__}.{c.__name__}")


CONFIGS = _all_config_classes()


def test_every_config_dataclass_of_the_project_uses_the_generic_reader():
    names = {c.__name__ for c in CONFIGS}
    expected = {"RunConfig", "ImageModelConfig", "PreprocessConfig", "ReportGeneratorConfig", "ConnectorConfig",
                "GenerationSettings", "AbnormalityHeadConfig", "LabelSet", "Provenance", "CTViTConfig",
                "DataSource", "TrainConfig", "EvaluateConfig", "SweepConfig", "EncoderTrainConfig",
                "ClassifierTrainConfig", "TrainState", "CacheIdentity", "LoraSettings", "SynthConfig", "AppConfig",
                "MultimodalConfig", "MultimodalRunConfig", "MultimodalTrainConfig"}
    assert expected <= names, expected - names
    assert all(dataclasses.is_dataclass(c) for c in CONFIGS)


# -- a sample of every config, generated from its field types -----------------------------------
def _sample(tp, name: str):
    """A valid value of type `tp` that differs from the usual defaults."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        return _sample(next(a for a in args if a is not type(None)), name)
    if origin is typing.Literal:
        return args[-1]
    if dataclasses.is_dataclass(tp):
        return _instance(tp)
    if origin is tuple:
        if args and args[-1] is not Ellipsis:
            return tuple(_sample(a, name) for a in args)
        return (_sample(args[0], name),) * 2 if args else ()
    if origin is list:
        return [_sample(args[0], name)]
    if origin is dict or tp is dict:
        return {"k": _sample(args[1], name)} if len(args) == 2 else {"note": [1, "two"]}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return list(tp)[-1]
    return {bool: True, int: 3, float: 0.25, str: "x", Path: Path("p")}.get(tp)


def _instance(cls):
    """An instance of `cls` with every field set to a non-default value where the class accepts it."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    required = {f.name: _sample(hints[f.name], f.name) for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if cls.__name__ == "LabelSet":
        required = {"name": "set", "names": ("A", "B"), "synonyms": {"A": ("a",)}}
    if cls.__name__ == "SweepConfig":
        required["decoders"] = (("tiny", "/decoder"),)
    obj = cls(**required)
    for f in fields:
        if f.name in required:
            continue
        try:
            obj = dataclasses.replace(obj, **{f.name: _sample(hints[f.name], f.name)})
        except (ConfigError, ValueError, TypeError, KeyError):
            pass  # a value this field refuses: it keeps its default
    return obj


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_config_round_trips_json(cls):
    config = _instance(cls)
    text = json.dumps(config.to_dict())
    again = cls.from_dict(json.loads(text), "sample.json")
    assert again == config
    assert json.dumps(again.to_dict()) == text


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_an_unknown_key_is_one_line_naming_the_file_and_the_key(cls):
    data = _instance(cls).to_dict()
    if getattr(cls, "_json_extra", "error") == "ignore":  # records a later rad3d may extend
        assert cls.from_dict({**data, "added_later": 1}) == cls.from_dict(data)
        return
    with pytest.raises(ConfigError) as err:
        cls.from_dict({**data, "no_such_setting": 1}, Path("/runs/r1/config.json"))
    assert str(err.value).startswith("/runs/r1/config.json: unknown key 'no_such_setting'")
    assert "\n" not in str(err.value)


def _run_config_text() -> tuple[Path, str]:
    path = SHIPPED / "runs" / "v3" / "config.json"
    return path, path.read_text()


def test_a_bad_nested_key_or_type_names_the_file_and_the_key_path(tmp_path):
    from engine.rundir import open_run

    _, text = _run_config_text()
    for change, expected in (
        (lambda d: d["preprocess"].update(flip=True), "unknown key 'preprocess.flip' in PreprocessConfig"),
        (lambda d: d["generator"]["connector"].update(n_layers="two"), "generator.connector.n_layers must be int"),
        (lambda d: d["generation"].pop("max_new_tokens") and d["generation"].update(max_tokens=9),
         "unknown key 'generation.max_tokens'"),
        (lambda d: d["classifier"].pop("weights"), "missing key 'classifier.weights'"),
        (lambda d: d.update(format="rad3d-run/0"), "not a rad3d run config"),
    ):
        data = json.loads(text)
        change(data)
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps(data))
        with pytest.raises(ConfigError) as err:
            open_run(run, check=False)
        assert str(err.value).startswith(f"{run / 'config.json'}: ") and expected in str(err.value), str(err.value)


def test_run_config_members_are_typed_and_old_files_read():
    from engine.labels import LabelSet
    from engine.model_configs import (
        GenerationSettings,
        PreprocessConfig,
        ReportGeneratorConfig,
    )
    from engine.rundir import RunConfig

    path, text = _run_config_text()
    data = json.loads(text)
    config = RunConfig.from_dict(data, path)
    assert isinstance(config.label_set, LabelSet) and len(config.label_set) == 18
    assert isinstance(config.preprocess, PreprocessConfig) and config.preprocess.channels == 6
    assert isinstance(config.generator, ReportGeneratorConfig) and config.generator.connector.n_layers == 2
    assert config.generation == GenerationSettings(max_new_tokens=64)
    # A run written before generation settings were stored ({}) or before its domain guard reads too.
    older = RunConfig.from_dict({**data, "generation": {}, "domain_guard": None}, path)
    assert older.generation == GenerationSettings() and older.domain_guard is None
    # Built from the JSON forms in code, it is the same typed config.
    assert RunConfig(**{k: v for k, v in data.items() if k not in ("format", "provenance")},
                     provenance=config.provenance) == config


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_shipped_run_configs_write_back_byte_for_byte_with_the_manifest_digest(variant):
    from engine.rundir import RunConfig

    rel = f"runs/{variant}/config.json"
    raw = (SHIPPED / rel).read_bytes()
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    config = RunConfig.from_dict(json.loads(raw), SHIPPED / rel)
    written = (json.dumps(config.to_dict(), indent=1) + "\n").encode()  # the export's format
    assert written == raw
    assert hashlib.sha256(written).hexdigest() == manifest["files"][rel]


def test_shipped_image_model_reads_and_keeps_every_key():
    from engine.rundir import ImageModelConfig

    path = SHIPPED / "image" / "image_model.json"
    data = json.loads(path.read_text())
    written = ImageModelConfig.from_dict(data, path).to_dict()

    def kept(ours, theirs):  # every key of the file, with its value; keys added since may be extra
        if isinstance(theirs, dict):
            return all(k in ours and kept(ours[k], v) for k, v in theirs.items())
        return ours == theirs

    assert kept(written, data) and not kept(written, {**data, "label_set": {"name": "other"}})


def test_data_source_reads_the_older_bare_folder_form():
    from engine.data.source import DataSource
    from training.configs import TrainConfig

    assert DataSource.from_dict("/data/ct") == DataSource(root="/data/ct")
    train_config = json.loads((SHIPPED / "runs" / "v2" / "train_config.json").read_text())
    assert isinstance(train_config["data"], str)
    config = TrainConfig.from_dict(train_config, "train_config.json")
    assert config.data == DataSource(root=train_config["data"]) and config.layers == 2


# -- command-line options generated from the fields ----------------------------------------------
def _commands():
    from engine.synth.config import SynthConfig
    from training.configs import (
        ClassifierTrainConfig,
        EncoderTrainConfig,
        EvaluateConfig,
        SweepConfig,
        TrainConfig,
    )

    base = ["--data", "D", "--out", "O"]
    return {
        "train": (TrainConfig, [*base, "--variant", "v3", "--cache", "C", "--decoder", "L", "--image-model", "I"]),
        "evaluate": (EvaluateConfig, [*base, "--run", "R", "--cache", "C"]),
        "sweep": (SweepConfig, [*base, "--cache", "C", "--image-model", "I", "--decoders", "tiny=/decoder"]),
        "train-classifier": (ClassifierTrainConfig, [*base, "--cache", "C"]),
        "train-encoder": (EncoderTrainConfig, base),
        "synth": (SynthConfig, ["--out", "O", "--n", "3"]),
    }


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    from cli import build_parser

    return build_parser().parse_args([command, *argv])


def _given(cls, args) -> dict:
    """The values a command adds itself (dataset, decoder list) besides the generated options."""
    from engine.data import source_from_args
    from training.sweep import parse_decoders

    names = {f.name for f in dataclasses.fields(cls)}
    given = {"data": source_from_args(args)} if "data" in names else {}
    if "decoders" in names:
        given["decoders"] = parse_decoders(args.decoders)
    if "prevalence" in names:
        from engine.synth.config import parse_prevalence

        given["prevalence"] = parse_prevalence(args.prevalence)
    return given


@pytest.mark.parametrize("command", list(_commands()))
def test_command_defaults_are_the_config_defaults(command):
    cls, argv = _commands()[command]
    args = _parse(command, argv)
    from_cli = config_from_args(cls, args, **_given(cls, args))
    required = {f.name: getattr(from_cli, f.name) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert from_cli == cls(**required)


@pytest.mark.parametrize("command", list(_commands()))
def test_every_generated_option_reaches_its_field(command):
    """Each field with an option: a non-default value on the command line arrives in the config."""
    cls, argv = _commands()[command]
    sample = _instance(cls)
    hints = typing.get_type_hints(cls)
    checked = 0
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            continue
        value = getattr(sample, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value == default:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            extra = [flag if value else "--no-" + flag[2:]]
        else:
            extra = [flag, *map(str, value if isinstance(value, tuple) else (value,))]
        args = _parse(command, [*argv, *extra])
        assert getattr(config_from_args(cls, args, **_given(cls, args)), f.name) == value, f.name
        checked += 1
    assert checked >= 5


def test_generated_options_keep_the_documented_names():
    """Options the README and tests use, now generated from the fields, keep their spelling."""
    for command, options in {
        "train": ["--lora", "--schedule", "cosine", "--warmup-steps", "3", "--mixed-precision", "no"],
        "evaluate": ["--format", "vlm3d", "--no-bertscore", "--no-meteor", "--convention", "coco", "--beams", "2"],
        "sweep": ["--variants", "v2", "v3", "--prefix-lens", "2", "5", "--no-bertscore", "--eval-split", "test"],
        "train-encoder": ["--shift-voxels", "0", "0", "0", "--no-standardize-latent", "--token-loss-weight", "0"],
        "train-classifier": ["--patience", "5", "--hidden", "16"],
        "synth": ["--hu", "--scale", "4", "--normal-fraction", "0.2"],
    }.items():
        cls, argv = _commands()[command]
        args = _parse(command, [*argv, *options])
        assert config_from_args(cls, args, **_given(cls, args)) != config_from_args(
            cls, _parse(command, argv), **_given(cls, _parse(command, argv)))


def test_a_bad_value_is_refused_by_argparse_or_the_config():
    from training.configs import TrainConfig

    with pytest.raises(SystemExit):
        _parse("train", [*_commands()["train"][1], "--schedule", "step"])
    args = _parse("train", [*_commands()["train"][1], "--epochs", "0"])
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        config_from_args(TrainConfig, args, **_given(TrainConfig, args))


def test_files_and_options_written_before_the_decoder_rename_still_read(tmp_path, capsys):
    """"llm" / "llms" (before the component was named the decoder) read as "decoder" / "decoders",
    from a file (engine.config.RENAMED_KEYS) and as hidden options; written files use the new key."""
    from training.configs import SweepConfig, TrainConfig

    shipped = json.loads((SHIPPED / "runs" / "v2" / "train_config.json").read_text())
    assert "llm" in shipped and "decoder" not in shipped  # the shipped, digest-checked file keeps its bytes
    config = TrainConfig.from_dict(shipped, "train_config.json")
    assert config.decoder == shipped["llm"]
    assert "llm" not in config.to_dict() and config.to_dict()["decoder"] == shipped["llm"]
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown key 'llm'"):  # both keys: the old one is not renamed over the new
        TrainConfig.from_dict({**config.to_dict(), "llm": "/elsewhere"})
    sweep = {"data": "/d", "cache": "c", "image_model": "i", "out": "o", "llms": [["tiny", "/m"]]}
    assert SweepConfig.from_dict(sweep).decoders == (("tiny", "/m"),)

    cls, argv = _commands()["train"]
    old = [a if a != "--decoder" else "--llm" for a in argv]
    assert config_from_args(cls, _parse("train", old), **_given(cls, _parse("train", old))) == config_from_args(
        cls, _parse("train", argv), **_given(cls, _parse("train", argv)))
    without = argv[:argv.index("--decoder")] + argv[argv.index("--decoder") + 2:]
    with pytest.raises(SystemExit):
        _parse("train", without)
    assert "--decoder" in capsys.readouterr().err
    cls, argv = _commands()["sweep"]
    old = [a if a != "--decoders" else "--llms" for a in argv]
    assert _given(cls, _parse("sweep", old)) == _given(cls, _parse("sweep", argv))


@dataclasses.dataclass(frozen=True)
class Inner(JsonConfig):
    size: tuple[int, int] = (1, 2)


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass(frozen=True)
class Outer(JsonConfig):
    path: Path
    mode: Mode = Mode.FAST
    kind: typing.Literal["a", "b"] = "a"
    inner: Inner | None = None
    items: tuple[Inner, ...] = ()


def test_generic_reader_types():
    outer = config_from_dict(Outer, {"path": "/x", "mode": "slow", "kind": "b", "inner": {"size": [3, 4]},
                                     "items": [{"size": [5, 6]}]})
    assert outer == Outer(Path("/x"), Mode.SLOW, "b", Inner((3, 4)), (Inner((5, 6)),))
    assert outer.to_dict() == {"path": "/x", "mode": "slow", "kind": "b", "inner": {"size": [3, 4]},
                               "items": [{"size": [5, 6]}]}
    for bad, message in (({"path": "/x", "kind": "c"}, "kind must be one of 'a', 'b'"),
                         ({"path": "/x", "mode": "medium"}, "mode must be one of fast, slow"),
                         ({"path": "/x", "inner": {"size": [1]}}, "inner.size must have 2 items"),
                         ({"path": "/x", "items": [{"size": [1, True]}]}, "items[0].size[1] must be int"),
                         ({}, "missing key 'path'")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            config_from_dict(Outer, bad, "o.json")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Outer, exclude=("inner", "items"))
    assert config_from_args(Outer, parser.parse_args(["--path", "/y", "--mode", "slow"])) == Outer(Path("/y"), Mode.SLOW)
