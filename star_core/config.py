"""One typed configuration tree for every part of `star`, loaded once.

`StarConfig` holds frozen dataclass subtrees (features, model, train, localize, detect, storage).
Each subtree is owned by the module that uses it; this file only assembles the tree and loads it:
`load_config(path, overrides)` reads an optional YAML file, applies dotted overrides such as
``train.lr=3e-4``, rejects unknown keys and checks types (pydantic at this boundary only).
Environment variables are never read here: endpoints and credentials are read at call time by
``star_core.io`` and ``jobs.tracking``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from star_core.model.config import LocalizeConfig, LossConfig, ModelConfig, RefineConfig, TrainConfig
from star_core.video.config import FeatureConfig


@dataclass(frozen=True)
class StorageConfig:
    lake_uri: str = "./star-lake"  # root of the lake: local path or s3://bucket/prefix
    s3_endpoint_url: str | None = None  # S3-compatible endpoint (MinIO/Ceph/moto); else AWS_ENDPOINT_URL
    mlflow_tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite:///<lake>/mlflow.db
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray started on demand


@dataclass(frozen=True)
class DetectConfig:
    model_uri: str = "models:/star@champion"  # MLflow model URI used by bulk detection
    batch_size: int = 16  # videos per Ray Data batch
    num_actors: int = 1  # model-holding actors (one GPU each when use_gpu)
    use_gpu: bool = False  # request one GPU per actor
    timelines_logged: int = 3  # timeline PNGs logged to the detection run in MLflow


@dataclass(frozen=True)
class StarConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (JSON/YAML/MLflow friendly)."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config, e.g. ``{"train.lr": 1e-4}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in to_dict(cfg).items() if dataclasses.is_dataclass(cfg) else cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a config section")
    node[parts[-1]] = value


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    # YAML parsing gives numbers, booleans, lists and null their natural types.
    return key.strip(), yaml.safe_load(raw) if raw != "" else ""


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Reject keys that are not fields (typos must not be silently ignored)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {where}{key!r}{hint}")
        factory = fields[key].default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config section {where}{key!r} must be a mapping, got {type(value).__name__}")
            _check_keys(factory, value, f"{where}{key}.")


def from_dict(data: Mapping[str, Any] | None, cls: type = StarConfig) -> Any:
    """Build a typed config from a (partial) nested dict, rejecting unknown keys and bad types."""
    import pydantic

    data = dict(data or {})
    _check_keys(cls, data, "")
    try:
        return pydantic.TypeAdapter(cls).validate_python(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def presets() -> list[str]:
    """Names of the shipped presets (``star_core/presets/<name>.yaml``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_tree(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text()
    tree = (json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return tree


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), preset: str | None = None) -> StarConfig:
    """Load the config tree: defaults, then a named preset, then a YAML/JSON file, then dotted overrides.

    ``preset`` names a file shipped in ``star_core/presets/`` (``paper``: the paper's literal
    setting, the product default before the self-training recipe).
    """
    tree: dict[str, Any] = {}
    if preset:
        if preset not in presets():
            close = difflib.get_close_matches(preset, presets(), n=1)
            raise ConfigError(f"unknown preset {preset!r}{f' (did you mean {close[0]!r}?)' if close else ''}; shipped: {', '.join(presets())}")
        tree = _read_tree(PRESETS_DIR / f"{preset}.yaml")
    if path is not None:
        tree = _merge(tree, _read_tree(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(tree, key, value)
    return from_dict(tree)


def replace(cfg: Any, **changes: Any) -> Any:
    """Frozen-dataclass update; nested changes with dotted keys (``replace(cfg, **{"train.lr": 1e-3})``)."""
    tree = to_dict(cfg)
    for key, value in changes.items():
        _set_dotted(tree, key, value)
    return from_dict(tree, type(cfg))
