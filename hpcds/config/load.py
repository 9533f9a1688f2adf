"""YAML + command-line overrides → a validated `HpcdsConfig`.

    cfg = load_config("configs/tiny.yaml", ["training.steps=10", "data.variables=[2t,tp]"])

Order of precedence: schema defaults < YAML file < `key=value` overrides. Every failure is a
`ConfigError` with one line naming the key and the valid keys or values.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import typing
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    GrammarParseError,
    InterpolationResolutionError,
    OmegaConfBaseException,
    ValidationError,
)

from hpcds.atomic import atomic_write_text
from hpcds.config.schema import HpcdsConfig
from hpcds.config.validate import validate
from hpcds.errors import ConfigError

# configs/*.yaml of the checkout hpcds is installed from (editable install, see README)
PRESETS_DIR = Path(__file__).resolve().parents[2] / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a shipped preset ("tiny", "o96_o320", ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and preset.is_file():
        return preset
    raise ConfigError(
        f"config {name_or_path!r} not found: give a YAML path or one of the presets "
        f"{', '.join(preset_names())}"
    )


def load_config(name_or_path: str | None, overrides: typing.Sequence[str] = ()) -> HpcdsConfig:
    """Merge schema defaults, the YAML file (if any) and overrides; validate; resolve."""
    schema = OmegaConf.structured(HpcdsConfig)
    layers = []
    source = "defaults"
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        source = str(path)
        layers.append((_load_yaml(path), source))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. training.steps=10)")
        key = item.split("=", 1)[0]
        _check_key_path(key)
        try:
            layers.append((OmegaConf.from_dotlist([item]), f"override {item!r}"))
        except (GrammarParseError, OmegaConfBaseException) as exc:
            raise ConfigError(f"override {item!r}: {_one_line(exc)}") from None
    merged = _merge(schema, layers)
    try:
        OmegaConf.resolve(merged)
        cfg: HpcdsConfig = OmegaConf.to_object(merged)
    except InterpolationResolutionError as exc:
        raise ConfigError(f"config {source}: bad interpolation: {_one_line(exc)}") from None
    except ValidationError as exc:
        raise _value_error(exc, source) from None
    validate(cfg)
    return cfg


def _load_yaml(path: Path):
    """The file's settings as a DictConfig; a file that is not YAML, is empty or is not a
    mapping of sections is refused here, before defaults could silently stand in for it."""
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as exc:  # not an OmegaConf error: it comes from the parser below
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or _one_line(exc)
        raise ConfigError(f"config {path} is not valid YAML: {problem}{where}; fix it there "
                          "(sections hold `key: value` lines, indented with spaces)") from None
    except (OSError, UnicodeDecodeError, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot read config {path}: {_one_line(exc)}") from None
    sections = ", ".join(f.name for f in dataclasses.fields(HpcdsConfig))
    if not isinstance(layer, DictConfig):  # a list: OmegaConf wraps a scalar as {value: None}
        raise ConfigError(f"config {path} holds a list, not a mapping of sections "
                          f"({sections}); write it as `section: {{key: value}}` lines")
    if len(layer) == 0:
        # an empty file would run on the schema defaults (a global O96 model), which is
        # never what a user who named a file meant
        raise ConfigError(f"config {path} is empty: write the settings to change in it "
                          f"(e.g. start from {PRESETS_DIR / 'tiny.yaml'}) or name a preset "
                          f"({', '.join(preset_names())})")
    return layer


def _merge(schema, layers):
    merged = schema
    for layer, source in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except (ConfigKeyError, ConfigAttributeError) as exc:
            raise _unknown_key_error(exc, source) from None
        except ValidationError as exc:
            raise _value_error(exc, source) from None
    return merged


def _check_key_path(dotted: str) -> None:
    """Reject an unknown key in an override before OmegaConf sees it (clearer message)."""
    node: type = HpcdsConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            where = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(
                f"unknown config key {dotted!r}: {where} has keys {', '.join(fields)}"
            )
        hint = typing.get_type_hints(node)[part]
        if dataclasses.is_dataclass(hint):
            node = hint
        elif typing.get_origin(hint) is dict and depth == len(parts) - 2:
            return  # one entry of a map (data.log_transform.tp=...): any name
        elif depth < len(parts) - 1:
            raise ConfigError(f"unknown config key {dotted!r}: {'.'.join(parts[:depth + 1])} "
                              "is a value, not a section")


def _section_fields(full_key: str) -> tuple[str, list[str]]:
    """The dotted section that holds `full_key` and the field names valid there."""
    node: type = HpcdsConfig
    parts = [p for p in full_key.split(".") if p]
    section = []
    for part in parts[:-1]:
        hints = typing.get_type_hints(node)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            break
        node = hints[part]
        section.append(part)
    return ".".join(section) or "the top level", [f.name for f in dataclasses.fields(node)]


def _unknown_key_error(exc: OmegaConfBaseException, source: str) -> ConfigError:
    full_key = getattr(exc, "full_key", None) or getattr(exc, "key", "") or "?"
    where, valid = _section_fields(str(full_key))
    return ConfigError(
        f"unknown config key {full_key!r} in {source}: {where} has keys {', '.join(valid)}"
    )


def _value_error(exc: ValidationError, source: str) -> ConfigError:
    full_key = str(getattr(exc, "full_key", "") or "?")
    valid = _valid_values(full_key)
    value = getattr(exc, "value", None)
    return ConfigError(
        f"bad value {value!r} for config key {full_key!r} in {source}: expected {valid}"
    )


def _valid_values(full_key: str) -> str:
    node: typing.Any = HpcdsConfig
    for part in full_key.split("."):
        if typing.get_origin(node) is dict:  # one entry of a map: its value type
            node = typing.get_args(node)[1]
            continue
        if not dataclasses.is_dataclass(node):
            break
        hints = typing.get_type_hints(node)
        if part not in hints:
            break
        node = hints[part]
    origin = typing.get_origin(node)
    args = [a for a in typing.get_args(node) if a is not type(None)]
    if origin is typing.Union and len(args) == 1:
        node = args[0]
        origin = typing.get_origin(node)
    if isinstance(node, type) and issubclass(node, enum.Enum):
        return "one of " + ", ".join(m.name for m in node)
    if origin in (list, typing.List):
        inner = typing.get_args(node)[0]
        return f"a list of {getattr(inner, '__name__', inner)}"
    if origin is dict:
        inner = typing.get_args(node)[1]
        return f"a map {{name: {getattr(inner, '__name__', inner)}}}"
    return f"a value of type {getattr(node, '__name__', node)}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")[0].split())


def to_yaml(cfg: HpcdsConfig) -> str:
    """The fully resolved config as YAML (what is printed at start and saved beside outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_resolved(cfg: HpcdsConfig, directory: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config beside a run's outputs, atomically."""
    directory = Path(directory)
    atomic_write_text(directory / name, to_yaml(cfg))  # creates `directory` if need be
    return directory / name
