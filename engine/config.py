"""Typed configs: every config dataclass reads and writes JSON through these two functions, and
every command builds its options from a config's fields, so each setting and its default live
once, in the dataclass.

A config class subclasses `JsonConfig` (giving it `to_dict` / `from_dict`) and may define:
- `_json_in(cls, value) -> dict`: an older or shorter written form turned into the field names
  (e.g. a data source written as a bare folder path, a label set's "findings" list);
- `_json_out(self, data) -> dict`: the generic dict adjusted before it is written (settings left
  out at their "off" value so older fingerprints hold, derived statements added);
- `_json_ignore`: keys that are read and dropped (derived values written for human readers);
  `_json_extra = "ignore"`: every unknown key is dropped (records a later rad3d may extend).
Field help for the command line sits in the field's metadata: `setting(default, "help")`.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from engine.errors import ConfigError

_NONE = type(None)


class JsonConfig:
    """Mixin of config dataclasses: `to_dict` and `from_dict` by the generic reader/writer."""

    _json_ignore: ClassVar[frozenset[str]] = frozenset()
    _json_extra: ClassVar[str] = "error"

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data, source: str | Path | None = None):
        return config_from_dict(cls, data, source)


def setting(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
            flag: str | None = None, choices: tuple | None = None, metavar: Any = None, cli: bool = True,
            aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its command-line help (and, where the option's name or choices are not
    the field's own, `flag` / `choices` / `metavar`; `cli=False`: never an option; `aliases`: older
    option names still accepted, hidden from the help)."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "cli": cli, "aliases": aliases}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def setting_like(cls, name: str, help: str | None = None) -> Any:
    """A field with the same default (and, unless given, help) as `cls`'s field `name`: a config that runs
    another config's recipe (a sweep, a study) takes that recipe's defaults from it, so each lives once."""
    f = cls.__dataclass_fields__[name]
    meta = dict(f.metadata)
    return dataclasses.field(default=f.default, default_factory=f.default_factory,
                             metadata={**meta, "help": meta.get("help", "") if help is None else help})


# Keys renamed since files were written (old -> new), read for any config that has the new field and
# not the old one, so every run, checkpoint and shipped file written before the rename still reads;
# written files always carry the new key. One place for every rename of a stored key.
RENAMED_KEYS: dict[str, str] = {
    "llm": "decoder",  # TrainConfig: the decoder folder, "llm" before rad3d named the component "decoder"
    "llms": "decoders",  # SweepConfig
}


def _renamed(data: Mapping, fields) -> Mapping:
    old = [k for k in data if RENAMED_KEYS.get(k) in fields and k not in fields and RENAMED_KEYS[k] not in data]
    return {RENAMED_KEYS.get(k, k) if k in old else k: v for k, v in data.items()} if old else data


# -- JSON -> config --------------------------------------------------------------------------------
@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_from_dict(cls, data, source: str | Path | None = None, *, where: str = ""):
    """`cls` built from its JSON form, nested configs, tuples, Paths, Literals and enums included.
    Raises one-line ConfigErrors naming `source` (the file) and the key at fault."""
    if isinstance(data, cls):
        return data
    label = where.rstrip(".") or cls.__name__
    if hasattr(cls, "_json_in"):
        try:
            data = cls._json_in(data)
        except ConfigError as err:
            raise ConfigError(f"{label}: {err.problem}", err.path or source) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a JSON object, got {type(data).__name__} {data!r:.60}", source)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _renamed(data, fields)
    unknown = sorted(set(data) - set(fields) - set(getattr(cls, "_json_ignore", ())))
    if unknown and getattr(cls, "_json_extra", "error") != "ignore":
        raise ConfigError(f"unknown key {where + unknown[0]!r} in {cls.__name__} (known: {', '.join(fields)})", source)
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key {where + missing[0]!r} in {cls.__name__}", source)
    hints = _hints(cls)
    kwargs = {n: _coerce(hints[n], data[n], source, f"{where}{n}") for n in fields if n in data}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(err.problem, err.path or source) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad {label} ({err})", source) from None


def _coerce(tp, value, source, where: str):
    """`value` read from JSON (or argparse) as type `tp`."""
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        errors = []
        for arg in (a for a in args if a is not _NONE):
            try:
                return _coerce(arg, value, source, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}", source)
    if origin is ClassVar:
        return value
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, source, where=where + ".")
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r:.60}", source)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}", source)
            return tuple(_coerce(a, v, source, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, source, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be an object, got {value!r:.60}", source)
        item = args[1] if len(args) == 2 else Any
        return {k: _coerce(item, v, source, f"{where}.{k}") for k, v in value.items()}
    return _scalar(tp, value, source, where)


def _scalar(tp, value, source, where: str):
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where} must be one of {', '.join(str(m.value) for m in tp)}, got {value!r}",
                              source) from None
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool)
        or isinstance(value, float) and value.is_integer(),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, (str, Path)),
    }
    if tp not in ok:
        return value  # a type this reader does not know: the class's __post_init__ checks it
    if not ok[tp]:
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r:.60}", source)
    return tp(value)


def coerce_nested(config) -> None:
    """In a __post_init__: nested config fields given in their JSON form (dicts) become their
    typed configs, so code that builds a config from dicts gets the same object as from_dict."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Mapping) and _nested_config(hints[f.name]):
            object.__setattr__(config, f.name, _coerce(hints[f.name], value, None, f.name))


def _nested_config(tp) -> bool:
    return dataclasses.is_dataclass(tp) or any(dataclasses.is_dataclass(a) for a in typing.get_args(tp))


# -- config -> JSON --------------------------------------------------------------------------------
def config_to_dict(config) -> dict:
    """The JSON form of a config dataclass (field order; tuples as lists; each class's _json_out)."""
    data = {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    return config._json_out(data) if hasattr(config, "_json_out") else data


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if hasattr(value, "to_dict") else config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


# -- command line ----------------------------------------------------------------------------------
def _cli_fields(cls, exclude):
    return [f for f in dataclasses.fields(cls) if f.init and f.name not in exclude and f.metadata.get("cli", True)]


def _flag(f, prefix: str) -> str:
    return f.metadata.get("flag") or "--" + (prefix + f.name).replace("_", "-")


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _option(tp) -> dict:
    """argparse keywords for a field type: type, nargs, choices."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not _NONE]
        if len(rest) != 1:
            raise TypeError(f"no command-line form for {tp}")
        return _option(rest[0])
    if origin is Literal:
        return {"choices": args, "type": type(args[0])}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"choices": [m.value for m in tp]}
    if origin in (tuple, list):
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        return {**_option(args[0]), "nargs": len(args) if fixed else "+"}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if tp in (int, float, str):
        return {"type": tp}
    if tp is Path:
        return {"type": str}
    raise TypeError(f"no command-line form for {tp}")


def add_config_arguments(parser, cls, *, exclude=(), prefix: str = "") -> None:
    """One option per field of `cls` (less `exclude`): `--field-name`, typed from the annotation,
    required when the field has no default, help from the field's metadata plus its default."""
    hints = _hints(cls)
    for f in _cli_fields(cls, exclude):
        kw = _option(hints[f.name])
        default = _default(f)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_text = f.metadata.get("help", "").replace("%", "%%")
        if not required and default not in (None, ()) and kw.get("action") is None and "default" not in help_text:
            shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
            help_text = f"{help_text} (default {shown})".strip()
        for key in ("choices", "metavar"):
            if f.metadata.get(key) is not None:
                kw[key] = f.metadata[key]
        aliases = f.metadata.get("aliases") or ()
        # An older name shares the option's dest, hidden; a required option and its aliases form a
        # required group, so either name satisfies it and argparse still names the missing option.
        target = parser.add_mutually_exclusive_group(required=required) if aliases else parser
        target.add_argument(_flag(f, prefix), dest=prefix + f.name, required=required and not aliases,
                            default=None if required else default, help=help_text or None, **kw)
        for alias in aliases:
            target.add_argument(alias, dest=prefix + f.name, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


def field_help(cls, name: str) -> str:
    """A field's command-line help, for a command that reads that field its own way."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name).replace("%", "%%")


def config_from_args(cls, args: argparse.Namespace, *, exclude=(), prefix: str = "", source: str | None = None,
                     **given):
    """`cls` from the options add_config_arguments made (same `exclude` and `prefix`) plus `given`
    values (what the command reads its own way, e.g. the dataset)."""
    data = {f.name: getattr(args, prefix + f.name) for f in _cli_fields(cls, exclude)
            if hasattr(args, prefix + f.name) and f.name not in given}
    return config_from_dict(cls, {**data, **given}, source)


# -- config files ----------------------------------------------------------------------------------
def read_json(path: str | Path, what: str):
    """The JSON value in `path`, or one ConfigError naming the file: missing, unreadable or not JSON."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {what}: {err}", path) from None


def write_json(path: str | Path, data) -> Path:
    """Write `data` as indented JSON through a temporary file and a rename, so a reader never sees
    half a file and an interrupted write leaves the previous one."""
    import json
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path
