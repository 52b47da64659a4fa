"""Schemas are declared once, versioned, and checked on read with errors that name the file."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from star_core.io import schemas
from star_core.io.lake import Lake, conform
from star_core.io.schemas import SchemaError, check_schema


def _manifest_table(**overrides) -> pa.Table:
    row = {
        "job": "extract",
        "run_id": "r1",
        "input": "a.mp4",
        "status": "done",
        "finished_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    }
    row.update(overrides)
    return pa.Table.from_pylist([row], schema=schemas.MANIFEST)


def _with_meta(schema: pa.Schema, name: str | None, version: str | None) -> pa.Schema:
    meta = {}
    if name is not None:
        meta[schemas.SCHEMA_NAME_KEY] = name.encode()
    if version is not None:
        meta[schemas.SCHEMA_VERSION_KEY] = version.encode()
    return schema.with_metadata(meta)


def test_every_schema_is_named_and_versioned():
    assert set(schemas.ALL) == {"features", "labels", "detections", "manifest"}
    for name, schema in schemas.ALL.items():
        assert schema.metadata[schemas.SCHEMA_NAME_KEY].decode() == name
        assert int(schema.metadata[schemas.SCHEMA_VERSION_KEY]) >= 1
        check_schema(schema, schema, where="self")  # a schema matches itself


@pytest.mark.parametrize(
    "name, version, message",
    [
        ("labels", "1", "expected a 'manifest' table of schema version 1, found schema 'labels' version '1'"),
        ("manifest", "2", "found schema 'manifest' version '2'"),
        (None, None, "found schema None version None"),
    ],
)
def test_wrong_name_or_version_is_rejected(name, version, message):
    with pytest.raises(SchemaError, match="somefile.parquet: ") as err:
        check_schema(_with_meta(schemas.MANIFEST, name, version), schemas.MANIFEST, where="somefile.parquet")
    assert message in str(err.value)


def test_missing_column_and_wrong_type_are_rejected():
    without_reason = schemas.MANIFEST.remove(schemas.MANIFEST.get_field_index("reason"))
    with pytest.raises(SchemaError, match="f.parquet: column 'reason' is missing"):
        check_schema(without_reason, schemas.MANIFEST, where="f.parquet")
    i = schemas.MANIFEST.get_field_index("duration_s")
    retyped = schemas.MANIFEST.set(i, pa.field("duration_s", pa.string()))
    with pytest.raises(SchemaError, match="column 'duration_s' has type string, expected double"):
        check_schema(retyped, schemas.MANIFEST, where="f.parquet")


def test_conform_casts_fills_nullable_and_rejects_bad_columns():
    raw = pa.table({"job": ["x"], "run_id": ["r"], "input": ["a"], "status": ["done"], "n_segments": pa.array([7], pa.int64()),
                    "finished_at": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]), "extra": [1]})
    out = conform(raw, schemas.MANIFEST)
    assert out.schema.equals(schemas.MANIFEST, check_metadata=True)
    assert out.column("n_segments").type == pa.int32() and out.column("reason").null_count == 1
    with pytest.raises(SchemaError, match="required column 'status' is missing"):
        conform(raw.drop_columns(["status"]), schemas.MANIFEST, where="t")
    with pytest.raises(SchemaError, match="column 'job' has 1 nulls"):
        conform(raw.set_column(0, "job", pa.array([None], pa.string())), schemas.MANIFEST)
    with pytest.raises(SchemaError, match="column 'n_segments' cannot be cast to int32"):
        conform(raw.set_column(raw.schema.get_field_index("n_segments"), "n_segments", pa.array(["seven"])), schemas.MANIFEST)


def test_reading_a_file_of_another_schema_version_names_the_file(tmp_path):
    lake = Lake(tmp_path / "lake")
    path = lake.manifest_path("extract", "old")
    newer = _manifest_table().replace_schema_metadata(_with_meta(schemas.MANIFEST, "manifest", "2").metadata)
    lake.write_table(path, newer)  # no schema given: written as is, like a newer `star` would
    with pytest.raises(SchemaError) as err:
        lake.read_table(path, schemas.MANIFEST)
    assert str(err.value).startswith(f"{path}: expected a 'manifest' table of schema version 1")
    assert "version '2'" in str(err.value)
    # A foreign Parquet file (no star metadata at all).
    foreign = lake.path("manifests", "extract", "foreign.parquet")
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(SchemaError, match="foreign.parquet: expected a 'manifest' table"):
        lake.read_table(foreign, schemas.MANIFEST)


def test_written_tables_carry_schema_metadata(tmp_path):
    lake = Lake(tmp_path / "lake")
    path = lake.manifest_path("extract", "r1")
    lake.write_table(path, _manifest_table(), schemas.MANIFEST)
    meta = pq.read_schema(path).metadata
    assert meta[schemas.SCHEMA_NAME_KEY] == b"manifest" and meta[schemas.SCHEMA_VERSION_KEY] == b"1"
