"""Label files from any URI -> a versioned dataset in the lake (``star labels import``).

Reads CSV/TSV, JSON Lines, Parquet, a JSON array of row objects, or an ActivityNet-style JSON
(``{"database": {video: {"subset", "duration", "annotations": [{"segment", "label"}]}}}``) from
a local path or any fsspec URI (``s3://``, ``memory://``; ``.gz`` etc. are decompressed), hands
the rows to the pure validation in :mod:`star_core.labels`, checks which videos already have
features in the lake, and stores the result with :func:`star_core.io.datasets.save_dataset`
(same content: no-op; changed content: a new version).
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from star_core.io import fs as fsmod
from star_core.io import datasets, feature_store
from star_core.io.inputs import VIDEO_EXTENSIONS, video_id_from_uri
from star_core.io.lake import Lake, check_name
from star_core.labels import ImportOptions, LabelsError, RawRow, parse_rows, resolve_columns

FORMATS = ("csv", "tsv", "jsonl", "parquet", "json")
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "tsv", ".txt": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".json": "json",
}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass
class LabelRows:
    """What a label file holds, before validation."""

    source: str  # the file's URI, for messages
    format: str  # one of FORMATS ("json" covers ActivityNet and row arrays)
    rows: list[RawRow]
    columns: dict[str, str]  # column -> where it first appears ("header", "line 3")
    activitynet: bool = False  # rows already use the canonical field names


@dataclass
class LabelsImportResult:
    """Outcome of :func:`import_labels` (also the ``--json`` output of ``star labels import``)."""

    dataset: str
    version: int
    created: bool  # False: same content as the latest version, nothing written
    lake: str
    source: str
    format: str
    classes: list[str]
    n_videos: int
    splits: dict[str, int]
    with_features: dict[str, int]  # feature set -> videos of this dataset that have features there
    without_features: list[str]  # video ids with features in none of the feature sets checked
    skipped: list[str] = field(default_factory=list)  # problems of rows left out (skip_invalid)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ----- reading ---------------------------------------------------------------------------------
def detect_format(uri: str) -> str:
    """Format from the file name (compression suffixes ignored); ValueError when unknown."""
    name = str(uri).rsplit("/", 1)[-1].lower()
    for suffix in _COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    ext = os.path.splitext(name)[1]
    if ext not in _EXTENSIONS:
        raise ValueError(f"{uri}: cannot tell the format from {ext or 'no extension'!r}; pass --format ({', '.join(FORMATS)})")
    return _EXTENSIONS[ext]


def read_label_rows(uri: str, fmt: str | None = None, endpoint_url: str | None = None) -> LabelRows:
    """Read a label file's records from a local path or any fsspec URI.

    Args:
        uri: the label file.
        fmt: one of :data:`FORMATS`; None detects it from the name.
        endpoint_url: S3-compatible endpoint (else ``AWS_ENDPOINT_URL``).

    Returns:
        :class:`LabelRows` with each record's location for error messages.

    Raises:
        FileNotFoundError: no such file.
        LabelsError: the file cannot be parsed (bad JSON line, ragged CSV row, ...).
    """
    fmt = fmt or detect_format(uri)
    if fmt not in FORMATS:
        raise ValueError(f"unknown label file format {fmt!r}; use one of {', '.join(FORMATS)}")
    fs, path = fsmod.resolve(uri, endpoint_url)
    if not fs.exists(path):
        raise FileNotFoundError(f"label file {uri} does not exist")
    with fs.open(path, "rb", compression="infer") as fh:
        data = fh.read()
    if fmt in ("csv", "tsv"):
        return _read_csv(uri, data, fmt)
    if fmt == "jsonl":
        return _read_jsonl(uri, data)
    if fmt == "parquet":
        return _read_parquet(uri, data)
    return _read_json(uri, data)


def _read_csv(uri: str, data: bytes, fmt: str) -> LabelRows:
    text = data.decode("utf-8-sig")
    header = text.split("\n", 1)[0]
    delimiter = "\t" if fmt == "tsv" else max(",;\t", key=header.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        names = [n.strip() for n in next(reader)]
    except StopIteration:
        raise LabelsError(uri, ["the file is empty (no header line)"]) from None
    dup = sorted({n for n in names if names.count(n) > 1})
    problems = [f"header: column {dup[0]!r} appears twice"] if dup else []
    problems += [f"header: column {i + 1} has no name" for i, n in enumerate(names) if not n]
    rows, last_line = [], 1
    for cells in reader:
        start, last_line = last_line + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line
        where = f"line {start}"
        if len(cells) > len(names):
            problems.append(f"{where}: {len(cells)} fields but the header has {len(names)} (unquoted {delimiter!r} in a cell?)")
            continue
        rows.append(RawRow(where, dict(zip(names, cells))))
    if problems:
        raise LabelsError(uri, problems)
    return LabelRows(uri, fmt, rows, {n: "header" for n in names})


def _read_jsonl(uri: str, data: bytes) -> LabelRows:
    rows, columns, problems = [], {}, []
    for number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: expected a JSON object, got {type(record).__name__}")
            continue
        for key in record:
            columns.setdefault(key, where)
        rows.append(RawRow(where, record))
    if problems:
        raise LabelsError(uri, problems)
    return LabelRows(uri, "jsonl", rows, columns)


def _read_parquet(uri: str, data: bytes) -> LabelRows:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise LabelsError(uri, [f"not a readable Parquet file ({exc})"]) from None
    records = table.to_pylist()
    map_columns = [f.name for f in table.schema if pa.types.is_map(f.type)]
    for record in records:  # Arrow maps come back as [(key, value)] pairs
        for name in map_columns:
            if record[name] is not None:
                record[name] = dict(record[name])
    rows = [RawRow(f"row {i}", rec) for i, rec in enumerate(records, start=1)]
    return LabelRows(uri, "parquet", rows, {n: "header" for n in table.column_names})


def _read_json(uri: str, data: bytes) -> LabelRows:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise LabelsError(uri, [f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"]) from None
    if isinstance(doc, dict) and isinstance(doc.get("database"), dict):
        return _activitynet_rows(uri, doc["database"])
    if isinstance(doc, list):
        rows, columns, problems = [], {}, []
        for i, record in enumerate(doc, start=1):
            if not isinstance(record, dict):
                problems.append(f"item {i}: expected a JSON object, got {type(record).__name__}")
                continue
            for key in record:
                columns.setdefault(key, f"item {i}")
            rows.append(RawRow(f"item {i}", record))
        if problems:
            raise LabelsError(uri, problems)
        return LabelRows(uri, "json", rows, columns)
    raise LabelsError(uri, ['expected an ActivityNet-style object {"database": {...}} or a JSON array of row objects'])


def _activitynet_rows(uri: str, database: Mapping[str, Any]) -> LabelRows:
    """ActivityNet layout -> canonical rows; counts are the annotation counts per label."""
    rows, problems = [], []
    for video_id, entry in database.items():
        where = f"video {video_id!r}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object with subset/duration/annotations")
            continue
        annotations = entry.get("annotations") or []
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            problems.append(f"{where}: 'annotations' must be a list of {{segment, label}} objects")
            continue
        labels = list(dict.fromkeys("" if a.get("label") is None else str(a["label"]) for a in annotations))
        counts = {lab: sum(1 for a in annotations if str(a.get("label")) == lab) for lab in labels}
        values = {
            "video": video_id,
            "labels": labels,
            "counts": counts if labels and all(labels) else None,
            "intervals": annotations,
            "split": entry.get("subset"),
            "duration_s": entry.get("duration"),
        }
        rows.append(RawRow(where, values))
    if problems:
        raise LabelsError(uri, problems)
    return LabelRows(
        uri, "json", rows, {k: "database" for k in ("video", "labels", "counts", "intervals", "split", "duration_s")}, activitynet=True
    )


# ----- videos and features --------------------------------------------------------------------
def _parent_uri(uri: str) -> str:
    if "://" in uri:
        protocol, rest = uri.split("://", 1)
        return f"{protocol}://{posixpath.dirname(rest)}"
    return os.path.dirname(os.path.abspath(uri))


def video_resolver(label_file_uri: str) -> Callable[[str], tuple[str, str | None]]:
    """Map a ``video`` cell to ``(video_id, source_uri)``.

    A cell with a protocol, a slash or a video extension (``inputs.VIDEO_EXTENSIONS``) is a file: relative paths are taken
    relative to the label file's directory (on the same storage) and the id is
    :func:`video_id_from_uri` of it. Anything else is a bare video id with no source URI.
    """
    parent = _parent_uri(label_file_uri)

    def resolve(value: str) -> tuple[str, str | None]:
        is_file = "://" in value or "/" in value or "\\" in value or value.lower().endswith(VIDEO_EXTENSIONS)
        if not is_file:
            return value, None
        if "://" in value or os.path.isabs(value):
            uri = value
        elif "://" in parent:
            protocol, rest = parent.split("://", 1)
            uri = f"{protocol}://{posixpath.normpath(posixpath.join(rest, value))}"
        else:
            uri = os.path.normpath(os.path.join(parent, value))
        return video_id_from_uri(uri), uri

    return resolve


def feature_durations(lake: Lake, feature_sets: Sequence[str] | None = None) -> dict[str, dict[str, float | None]]:
    """Per feature set: video_id -> decoded duration (s, None when unknown) of every video with features.

    Args:
        lake: the lake.
        feature_sets: the sets to look at; None means all in the lake.
    """
    names = feature_store.list_feature_sets(lake) if feature_sets is None else list(feature_sets)
    out = {}
    for name in names:
        index = feature_store.feature_index(lake, name)
        out[name] = dict(zip(index.column("video_id").to_pylist(), index.column("duration_s").to_pylist()))
    return out


# ----- import ---------------------------------------------------------------------------------
def import_labels(
    file_uri: str,
    lake: Lake,
    dataset: str,
    opts: ImportOptions | None = None,
    column_map: Mapping[str, str] | None = None,
    ignore_columns: Sequence[str] = (),
    fmt: str | None = None,
    feature_sets: Sequence[str] | None = None,
) -> LabelsImportResult:
    """Validate a label file and store it as a version of ``dataset`` in ``lake``.

    Args:
        file_uri: the label file (local path or URI).
        lake: where the dataset goes.
        dataset: dataset name (a path component: letters, digits, ``._-``).
        opts: parsing, split and class-list options.
        column_map: canonical field -> file column (``--column``); not for ActivityNet JSON.
        ignore_columns: file columns to leave unread.
        fmt: file format; None detects it from the name.
        feature_sets: feature sets to check coverage against; None means all in the lake.

    Returns:
        :class:`LabelsImportResult` (version, whether it was created, splits, feature coverage).

    Raises:
        LabelsError: row-numbered problems (nothing is written).
        FileNotFoundError, ValueError: missing file, unknown format, bad dataset name.
    """
    opts = opts or ImportOptions()
    check_name("dataset", dataset)
    if opts.label_delimiter.strip() in ("", ":", "-"):
        raise ValueError(
            f"label delimiter {opts.label_delimiter!r} is not allowed (':' and '-' are used in 'label:count' and 'label:start-end')"
        )
    if "://" not in str(file_uri):
        file_uri = os.path.abspath(file_uri)  # provenance and relative video paths need the full path
    read = read_label_rows(file_uri, fmt)
    if read.activitynet:
        if column_map:
            raise ValueError(f"{file_uri}: --column does not apply to an ActivityNet-style JSON (its fields are fixed)")
        columns = {k: k for k in read.columns}
    else:
        columns = resolve_columns(read.columns, column_map, ignore_columns, source=file_uri)
    coverage = feature_durations(lake, feature_sets)
    durations: dict[str, float] = {}
    for per_set in coverage.values():
        for vid, dur in per_set.items():
            if dur is not None:
                durations.setdefault(vid, float(dur))
    parsed = parse_rows(read.rows, columns, opts, video_resolver(file_uri), durations, source=file_uri)
    warnings = list(parsed.warnings)
    for name in feature_sets or ():
        if not coverage.get(name):
            warnings.append(f"feature set {name!r} has no features in {lake.uri} yet")
    ids = [v.video_id for v in parsed.videos]
    with_features = {name: sum(1 for vid in ids if vid in per_set) for name, per_set in coverage.items()}
    without = sorted(vid for vid in ids if not any(vid in per_set for per_set in coverage.values()))
    source = {
        "file": file_uri,
        "format": read.format,
        "rows": len(read.rows),
        "skipped_rows": parsed.skipped[:200],
        "options": {
            "label_delimiter": opts.label_delimiter,
            "test_fraction": opts.test_fraction,
            "seed": opts.seed,
            "classes_given": opts.classes is not None,
            "duration_tolerance_s": opts.duration_tolerance_s,
        },
        "columns": columns,
    }
    version, created = datasets.save_dataset(lake, dataset, parsed.classes, parsed.videos, source=source)
    splits: dict[str, int] = {}
    for v in parsed.videos:
        splits[v.split] = splits.get(v.split, 0) + 1
    return LabelsImportResult(
        dataset=dataset,
        version=version,
        created=created,
        lake=lake.uri,
        source=file_uri,
        format=read.format,
        classes=list(parsed.classes),
        n_videos=len(parsed.videos),
        splits=dict(sorted(splits.items())),
        with_features=with_features,
        without_features=without,
        skipped=parsed.skipped,
        warnings=warnings,
    )


def describe_datasets(lake: Lake, name: str | None = None) -> list[dict]:
    """Every dataset version with its classes, videos per split and feature coverage per split.

    Returns:
        One dict per (dataset, version), sorted: ``name``, ``version``, ``classes``, ``n_videos``,
        ``splits`` ({split: n}), ``features`` ({feature_set: {split: n with features}}),
        ``created_at``, ``source`` (the imported file, when known).
    """
    coverage = feature_durations(lake)
    out = []
    for meta in datasets.list_datasets(lake):
        if name is not None and meta["name"] != name:
            continue
        ds = datasets.load_dataset(lake, meta["name"], meta["version"])
        splits: dict[str, int] = {}
        features: dict[str, dict[str, int]] = {fs_name: {} for fs_name in coverage}
        for v in ds.videos:
            splits[v.split] = splits.get(v.split, 0) + 1
            for fs_name, per_set in coverage.items():
                if v.video_id in per_set:
                    features[fs_name][v.split] = features[fs_name].get(v.split, 0) + 1
        out.append(
            {
                "name": ds.name,
                "version": ds.version,
                "classes": list(ds.classes),
                "n_videos": len(ds.videos),
                "splits": dict(sorted(splits.items())),
                "features": {k: dict(sorted(v.items())) for k, v in features.items()},
                "created_at": meta.get("created_at"),
                "source": (meta.get("source") or {}).get("file"),
            }
        )
    if name is not None and not out:
        raise KeyError(f"lake {lake.uri}: no dataset named {name!r}")
    return sorted(out, key=lambda d: (d["name"], d["version"]))
