"""One typed configuration tree for every part of `star`, loaded once.

`StarConfig` holds frozen dataclass subtrees: the model's (features, model, loss, train, localize,
refine: owned by the modules that use them) and the jobs' (extract, train_run, detect, benchmark,
resources, storage: defined here). Every run setting of every command is one dotted key of this tree;
a CLI flag is only a shorthand for one key (star_cli/options.py). `load_config(path, overrides,
preset, values)` reads an optional YAML/JSON file, applies dotted overrides such as ``train.lr=3e-4``,
rejects unknown keys (with a "did you mean" hint) and checks types and ``Literal`` choices (pydantic
at this boundary only).

Fields whose change does not make a training run a different run (resources, endpoints, logging
cadence) carry ``metadata=RESUME_FREE``; :func:`resume_fingerprint` leaves them out, so a run may be
resumed with other values of them.
Environment variables are never read here: endpoints and credentials are read at call time by
``star_core.io`` and ``jobs.tracking``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
import types
import typing
from typing import Any, Literal, Mapping, Sequence

import yaml

from star_core.model.config import RESUME_FREE, LocalizeConfig, LossConfig, ModelConfig, RefineConfig, TrainConfig
from star_core.video.config import FeatureConfig


@dataclass(frozen=True)
class StorageConfig:
    lake_uri: str = "./star-lake"  # root of the lake: local path or s3://bucket/prefix
    s3_endpoint_url: str | None = None  # S3-compatible endpoint (MinIO/Ceph/moto); else AWS_ENDPOINT_URL
    mlflow_tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite:///<lake>/mlflow.db


def _check(section: Any, **ok: bool) -> None:
    """Raise ValueError naming every field of the ``section`` dataclass whose check failed (a ConfigError at the boundary)."""
    bad = [f"{name}={getattr(section, name)!r}" for name, good in ok.items() if not good]
    if bad:
        raise ValueError(f"{type(section).__name__}: invalid {', '.join(bad)}")


@dataclass(frozen=True)
class ResourcesConfig:
    """Compute of the jobs (extract, train, detect) and of the flow's job steps."""

    workers: int = 1  # Ray Train workers (one DDP process each)
    cpus_per_worker: float = 1.0  # CPUs reserved per Train worker
    gpu: bool | None = None  # true: one GPU per Train worker / model actor; false: none; null: extraction when the cluster has GPUs
    actors: int = 0  # model-holding actors of extraction (I3D) and detection (STAR); 0: one per GPU when on GPUs, else 1
    cpus_per_actor: float = 1.0  # CPUs reserved per model actor
    ray_address: str | None = None  # Ray cluster to attach to; None: RAY_ADDRESS, else a local Ray started on demand
    timeout_s: int = 6 * 3600  # upper bound on each job step of a flow run (Prefect task timeout)

    def __post_init__(self) -> None:
        _check(self, workers=self.workers >= 1, cpus_per_worker=self.cpus_per_worker > 0, actors=self.actors >= 0,
               cpus_per_actor=self.cpus_per_actor >= 0, timeout_s=self.timeout_s >= 60)


@dataclass(frozen=True)
class ExtractConfig:
    """How `star extract` runs (the extractor's settings, which name the feature set, are `features`)."""

    ray: bool = False  # distribute over Ray (CPU tasks decode + flow, I3D actors); false: this process, one video after the other
    limit: int | None = None  # extract at most this many missing videos (trial runs); the rest are skipped
    overwrite: bool = False  # single process: re-extract videos that already have features in this feature set
    device: str | None = None  # single process: torch device of I3D (None: cuda when present, else cpu)
    flow_workers: int = 0  # single process: threads computing optical flow (0: the CPU count)
    prepare_cpus: float = 1.0  # Ray: CPUs each decode+flow task reserves (and flow threads it runs)
    prepare_in_flight: int = 0  # Ray: decode+flow tasks submitted at once; 0: the CPUs the actors leave free
    actor_queue: int = 2  # Ray: prepared videos waiting per actor (keeps the GPU busy; bounds object-store use)
    gpu_batch_segments: int = 32  # Ray: segments per I3D forward pass on a GPU (CPU actors use features.batch_segments)
    shard_videos: int = 16  # Ray: videos per features Parquet shard
    shard_max_s: float = 300.0  # Ray: write a partial shard after this long (a kill loses at most this much)
    max_retries: int = 3  # Ray: retries of a crashed task / restarts of a dead actor
    max_in_memory_mb: int = 1024  # Ray: remote videos up to this size are fetched in one request
    manifest_every_s: float = 30.0  # Ray: rewrite the run's manifest at most this often (and at the end)
    progress_every_s: float = 10.0  # Ray: progress line interval
    fail_on_error: bool = False  # exit status 1 when any video failed (default: only when every attempted video failed)

    def __post_init__(self) -> None:
        _check(self, limit=self.limit is None or self.limit >= 0, flow_workers=self.flow_workers >= 0,
               prepare_cpus=self.prepare_cpus > 0, prepare_in_flight=self.prepare_in_flight >= 0, actor_queue=self.actor_queue >= 1,
               gpu_batch_segments=self.gpu_batch_segments >= 1, shard_videos=self.shard_videos >= 1, max_retries=self.max_retries >= 0)


@dataclass(frozen=True)
class TrainRunConfig:
    """How `star train` runs, tracks and registers (the optimisation settings are `train`)."""

    run_name: str | None = field(default=None, metadata=RESUME_FREE)  # None: a fresh train-<time>-<hex>; an existing name resumes it
    experiment: str = "star"  # MLflow experiment
    model_name: str = "star"  # registered model name ("": do not register)
    alias: str | None = field(default="champion", metadata=RESUME_FREE)  # moved to the new version when it beats the holder (None: never)
    max_failures: int = field(default=1, metadata=RESUME_FREE)  # worker failures Ray Train recovers from (restart from the last checkpoint)
    timelines_logged: int = field(default=3, metadata=RESUME_FREE)  # test videos whose detection timelines are logged as PNGs


@dataclass(frozen=True)
class DetectConfig:
    model_uri: str = "models:/star@champion"  # MLflow model URI used by bulk detection
    batch_size: int = 16  # videos per Ray Data batch
    experiment: str = "star-detect"  # MLflow experiment of detection runs
    shard_videos: int = 1000  # videos per detections file (the driver flushes a shard this often)
    timelines_logged: int = 3  # timeline PNGs logged to the detection run in MLflow
    retry_failed: bool = False  # retry videos that failed before even when their features are unchanged

    def __post_init__(self) -> None:
        _check(self, batch_size=self.batch_size >= 1, shard_videos=self.shard_videos >= 1, timelines_logged=self.timelines_logged >= 0)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What `star benchmark` trains and evaluates besides the configured STAR."""

    ablation: bool = False  # add Table 1 (module combinations) and Table 2 (localizers)
    baseline: bool = True  # train and evaluate the STPN-style baseline
    baseline_epochs: int | None = None  # epochs of the STPN-style baseline (None: its own, StpnConfig.epochs)
    paper_reference: bool = True  # also train the paper preset (star_core/presets/paper.yaml) as a reference row
    upper_bound: bool = True  # supervised segment head on the train split's segment labels (evaluation aid only)
    diagnostics: bool = True  # attention diagnostics (mean α vs action fraction, α AUC) of the main model
    train_split: str = "train"  # split the models train on
    test_split: str = "test"  # split they are evaluated on
    detect_batch: int = 8  # test videos per detection batch
    processes: int = 1  # processes for the Table 1 trainings (1 = sequential in this process; 1 torch thread each)
    threads: int = 0  # torch CPU threads (0: torch's choice)
    device: str = "cpu"  # torch device of every training and detection ("cuda" on a GPU node)

    def __post_init__(self) -> None:
        _check(self, baseline_epochs=self.baseline_epochs is None or self.baseline_epochs >= 1,
               detect_batch=self.detect_batch >= 1, processes=self.processes >= 1, threads=self.threads >= 0)


@dataclass(frozen=True)
class StarConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig, metadata=RESUME_FREE)
    train_run: TrainRunConfig = field(default_factory=TrainRunConfig)
    detect: DetectConfig = field(default_factory=DetectConfig, metadata=RESUME_FREE)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig, metadata=RESUME_FREE)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig, metadata=RESUME_FREE)
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RESUME_FREE)


# Keys that moved: a config naming the old key gets an error naming the new one.
MOVED_KEYS = {
    "detect.num_actors": "resources.actors",
    "detect.use_gpu": "resources.gpu",
    "storage.ray_address": "resources.ray_address",
}


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
        if f"{where}{key}" in MOVED_KEYS:
            raise ConfigError(f"config key {where + key!r} moved to {MOVED_KEYS[where + key]!r}")
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
    except pydantic.ValidationError as exc:  # one line per problem, each naming its dotted key
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config: {problems}") from None


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


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), preset: str | None = None, values: Mapping[str, Any] | None = None
) -> StarConfig:
    """Load the config tree: defaults < a named preset < a YAML/JSON file < dotted overrides < ``values``.

    ``preset`` names a file shipped in ``star_core/presets/`` (``paper``: the paper's literal
    setting, the product default before the self-training recipe). ``overrides`` are ``key=value``
    texts (``--set``); ``values`` maps dotted keys to already typed values (the CLI's explicit flags).
    """
    tree: dict[str, Any] = {}
    if preset:
        if preset not in presets():
            close = difflib.get_close_matches(preset, presets(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown preset {preset!r}{hint}; shipped: {', '.join(presets())}")
        tree = _read_tree(PRESETS_DIR / f"{preset}.yaml")
    if path is not None:
        tree = _merge(tree, _read_tree(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(tree, key, value)
    for key, value in (values or {}).items():
        _set_dotted(tree, key, value)
    return from_dict(tree)


def replace(cfg: Any, **changes: Any) -> Any:
    """Frozen-dataclass update; nested changes with dotted keys (``replace(cfg, **{"train.lr": 1e-3})``)."""
    tree = to_dict(cfg)
    for key, value in changes.items():
        _set_dotted(tree, key, value)
    return from_dict(tree, type(cfg))


def resume_fingerprint(cfg: Any) -> dict[str, Any]:
    """The settings a resumed training run must share with the run it resumes: every field of ``cfg``
    (recursively) but those declared with ``metadata=RESUME_FREE``, as JSON-able values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("resume") == "free":
            continue
        value = getattr(cfg, f.name)
        out[f.name] = resume_fingerprint(value) if dataclasses.is_dataclass(value) else json.loads(json.dumps(value, default=str))
    return out


@dataclass(frozen=True)
class FieldInfo:
    """One leaf of the config tree, for building a CLI option bound to it."""

    key: str  # dotted key, e.g. "train.epochs"
    type: Any  # the field's type with None removed (int, float, str, bool, a Literal, tuple[float, ...])
    optional: bool  # None is a valid value
    default: Any
    comment: str  # the field's trailing comment in its dataclass's source ("" when none)


def _field_comments(cls: type) -> dict[str, str]:
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out, above = {}, ""
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("# "):  # a comment line above a field documents it when the field has no trailing one
            above = text[2:]
            continue
        name, sep, rest = text.partition(":")
        if sep and name.isidentifier():
            out[name] = rest.split("  # ", 1)[1].strip() if "  # " in rest else above
        above = ""
    return out


def leaf_keys(cls: type = StarConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the config tree (``["features.fps", ..., "storage.mlflow_tracking_uri"]``)."""
    out = []
    for name, hint in typing.get_type_hints(cls).items():
        out += leaf_keys(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [f"{prefix}{name}"]
    return out


def describe(key: str) -> FieldInfo:
    """Type, default and comment of the config field ``key``; ConfigError for a key that is not a leaf."""
    cls, parts = StarConfig, key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            close = difflib.get_close_matches(part, list(hints), n=1)
            raise ConfigError(f"unknown config key {key!r}{f' (did you mean {close[0]!r}?)' if close else ''}")
        hint = hints[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(hint):
                raise ConfigError(f"config key {key!r}: {'.'.join(parts[: i + 1])!r} is not a section")
            cls = hint
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"config key {key!r} is a section, not a setting")
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
    default = getattr(cls(), parts[-1])
    return FieldInfo(key=key, type=hint, optional=optional, default=default, comment=_field_comments(cls).get(parts[-1], ""))


def get(cfg: Any, key: str) -> Any:
    """The value of dotted ``key`` in ``cfg`` (``get(cfg, "train.epochs")``)."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg
