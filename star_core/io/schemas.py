"""Parquet schemas of the lake, declared once and versioned.

Every table carries ``star.schema`` (name) and ``star.schema_version`` in its Arrow metadata;
:func:`check_schema` rejects a table written by another version or missing columns, with an error
that names the file and what is wrong.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_NAME_KEY = b"star.schema"
SCHEMA_VERSION_KEY = b"star.schema_version"


class SchemaError(ValueError):
    """A lake table does not match the schema this version of `star` reads."""


def _versioned(name: str, version: int, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={SCHEMA_NAME_KEY: name.encode(), SCHEMA_VERSION_KEY: str(version).encode()})


TIMESTAMP = pa.timestamp("us", tz="UTC")

# One row per video. Features are flattened row-major (n_segments * feat_dim floats) with the
# shape in explicit columns, so readers never infer it and numpy views need no copy.
FEATURES = _versioned(
    "features",
    1,
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string()),
        pa.field("feature_set", pa.string(), nullable=False),
        pa.field("fps", pa.float64(), nullable=False),  # rate of the resampled frame stream
        pa.field("segment_frames", pa.int32(), nullable=False),
        pa.field("n_segments", pa.int32(), nullable=False),
        pa.field("feat_dim", pa.int32(), nullable=False),
        pa.field("duration_s", pa.float64()),
        pa.field("rgb", pa.large_list(pa.float32()), nullable=False),  # (n_segments * feat_dim,)
        pa.field("flow", pa.large_list(pa.float32()), nullable=False),
        pa.field("extractor_digest", pa.string()),
        pa.field("created_at", TIMESTAMP, nullable=False),
    ],
)

INSTANCE = pa.struct([("label", pa.string()), ("t_start_s", pa.float64()), ("t_end_s", pa.float64())])
INTERVAL = pa.struct([("t_start_s", pa.float64()), ("t_end_s", pa.float64())])

# One row per video of a dataset version. Training reads video_id, split, labels, counts only;
# instances and ambiguous are for evaluation.
LABELS = _versioned(
    "labels",
    1,
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train | val | test
        pa.field("labels", pa.list_(pa.string()), nullable=False),
        pa.field("counts", pa.list_(pa.int32())),  # aligned with labels; null when unknown
        pa.field("instances", pa.list_(INSTANCE)),
        pa.field("ambiguous", pa.list_(INTERVAL)),
        pa.field("duration_s", pa.float64()),
        pa.field("source_uri", pa.string()),
    ],
)

# One row per detection; the path adds hive partitions model=<name>-v<version>/date=YYYY-MM-DD.
DETECTIONS = _versioned(
    "detections",
    1,
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("t_start_s", pa.float64(), nullable=False),
        pa.field("t_end_s", pa.float64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("model_uri", pa.string()),
        pa.field("run_id", pa.string()),  # MLflow run of the detection job
        pa.field("feature_set", pa.string()),
        pa.field("detected_at", TIMESTAMP, nullable=False),
    ],
)

# One row per input of a job run: nothing is ever silently dropped.
MANIFEST = _versioned(
    "manifest",
    1,
    [
        pa.field("job", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),  # video URI or video_id
        pa.field("status", pa.string(), nullable=False),  # done | failed | skipped
        pa.field("reason", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("n_segments", pa.int32()),
        pa.field("output", pa.string()),  # file the result went to
        pa.field("finished_at", TIMESTAMP, nullable=False),
    ],
)

ALL = {s.metadata[SCHEMA_NAME_KEY].decode(): s for s in (FEATURES, LABELS, DETECTIONS, MANIFEST)}
MANIFEST_STATUSES = ("done", "failed", "skipped")


def check_schema(actual: pa.Schema, expected: pa.Schema, where: str) -> None:
    """Raise :class:`SchemaError` unless ``actual`` has ``expected``'s name, version and columns."""
    name = expected.metadata[SCHEMA_NAME_KEY].decode()
    meta = actual.metadata or {}
    got_name = meta.get(SCHEMA_NAME_KEY, b"").decode() or None
    got_version = meta.get(SCHEMA_VERSION_KEY, b"").decode() or None
    want_version = expected.metadata[SCHEMA_VERSION_KEY].decode()
    if got_name != name or got_version != want_version:
        raise SchemaError(
            f"{where}: expected a '{name}' table of schema version {want_version}, "
            f"found schema {got_name!r} version {got_version!r}"
        )
    for f in expected:
        if f.name not in actual.names:
            raise SchemaError(f"{where}: column {f.name!r} is missing")
        got = actual.field(f.name).type
        if got != f.type:
            raise SchemaError(f"{where}: column {f.name!r} has type {got}, expected {f.type}")


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
