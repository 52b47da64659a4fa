"""SQL over the lake: DuckDB views ``detections``, ``features`` and ``labels``.

DuckDB 2.0.1 cannot load its ``httpfs`` extension offline (duckdb#3315), so the lake is never
read through DuckDB's own S3 support. Each view is a pyarrow dataset over the lake's fsspec
filesystem (``star_core.io.fs.to_arrow_fs``) registered with ``con.register``; DuckDB pushes
column projections and filters into the scan, so ``features`` never touches the float lists.

Views:
    detections  every column of ``schemas.DETECTIONS`` plus the hive partitions ``model``
                (``<name>-v<version>``, string) and ``date`` (DATE).
    features    metadata of every feature row of every feature set (no ``rgb``/``flow``).
    labels      the latest version of every dataset, with ``dataset`` and ``dataset_version``.

Sandbox (issue 17): a query is one read-only statement over these views. After the views are
registered the connection is locked down with DuckDB's own settings: ``temp_directory=''`` (no
spill directory, which DuckDB would otherwise allow-list for writes), ``enable_external_access=false``
(no COPY, ATTACH, read_csv/read_text/glob, extension loading or Python replacement scans) and
``lock_configuration=true`` (a query cannot ``SET`` them back). The views still work because the
lake is read by pyarrow through the registered datasets, never by DuckDB's file system. Before
running, :func:`query` parses the SQL and refuses anything but exactly one SELECT statement.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from star_core.io import fs as fsmod
from star_core.io import datasets, schemas
from star_core.io.lake import Lake

# Hive partitions of detections: model=<name>-v<version>/date=YYYY-MM-DD.
DETECTION_PARTITIONS = pa.schema([("model", pa.string()), ("date", pa.date32())])
FEATURE_METADATA = [f.name for f in schemas.FEATURES if f.name not in ("rgb", "flow")]
VIEWS = ("detections", "features", "labels")
# Example queries (docs/querying.md quotes them; tests/jobs/test_query.py runs them). ``date`` is
# the partition date: the day the detection run wrote the rows.
EXAMPLES = {
    "longest": """SELECT video_id, t_start_s, t_end_s, t_end_s - t_start_s AS length_s, score, model, date
FROM detections
WHERE label = 'CricketShot' AND date >= current_date - INTERVAL 7 DAY
ORDER BY length_s DESC
LIMIT 20""",
    "per_day": """SELECT date, label, count(*) AS detections, count(DISTINCT video_id) AS videos
FROM detections
GROUP BY date, label
ORDER BY date, label""",
}
FORMATS = ("table", "csv", "json")


def _dataset(lake: Lake, directory: str, schema: pa.Schema, partitioning: Any = None) -> pads.Dataset | pa.Table:
    """A pyarrow dataset over the Parquet files under ``directory`` (an empty table when there are none)."""
    files = lake.list_files(directory)
    if not files:
        empty = schema.empty_table()
        if partitioning is not None:
            for f in DETECTION_PARTITIONS:
                empty = empty.append_column(f, pa.array([], f.type))
        return empty
    return pads.dataset(
        files,
        schema=pa.unify_schemas([schema, DETECTION_PARTITIONS]) if partitioning is not None else schema,
        format="parquet",
        filesystem=fsmod.to_arrow_fs(lake.fs),
        partitioning=partitioning,
        partition_base_dir=directory if partitioning is not None else None,
    )


def detections_dataset(lake: Lake) -> pads.Dataset | pa.Table:
    """All detections of the lake, with ``model`` and ``date`` partition columns."""
    return _dataset(lake, lake.detections_dir(""), schemas.DETECTIONS, pads.partitioning(DETECTION_PARTITIONS, flavor="hive"))


def features_dataset(lake: Lake) -> pads.Dataset | pa.Table:
    """Feature rows of every feature set (all columns; the ``features`` view projects metadata only)."""
    return _dataset(lake, lake.path("features"), schemas.FEATURES)


def labels_table(lake: Lake) -> pa.Table:
    """Latest version of every dataset's labels, with ``dataset`` and ``dataset_version`` columns (small)."""
    parts = []
    for name in sorted({d["name"] for d in datasets.list_datasets(lake)}):
        ds = datasets.load_dataset(lake, name)
        t = datasets.labels_to_table(ds.videos)
        t = t.append_column("dataset", pa.array([name] * t.num_rows, pa.string()))
        t = t.append_column("dataset_version", pa.array([ds.version] * t.num_rows, pa.int32()))
        parts.append(t.replace_schema_metadata(None))
    if not parts:
        empty = schemas.LABELS.empty_table().replace_schema_metadata(None)
        return empty.append_column("dataset", pa.array([], pa.string())).append_column("dataset_version", pa.array([], pa.int32()))
    return pa.concat_tables(parts)


def connect(lake: Lake | str):
    """A DuckDB connection with the ``detections``, ``features`` and ``labels`` views over ``lake``.

    Args:
        lake: a :class:`Lake` or its URI (local path or ``s3://bucket/prefix``).

    Returns:
        ``duckdb.DuckDBPyConnection`` (in-memory; the lake is read, never written), locked down by
        :func:`lock_down`: SQL on it cannot touch files, the network or its own settings.
    """
    import duckdb

    lake = Lake(lake) if isinstance(lake, str) else lake
    # Another process may have written since this filesystem listed the lake (docs/stack_notes.md: s3fs cache).
    lake.fs.invalidate_cache()
    con = duckdb.connect(":memory:")
    con.register("_detections", detections_dataset(lake))
    con.execute("CREATE VIEW detections AS SELECT * FROM _detections")
    con.register("_features", features_dataset(lake))
    con.execute(f"CREATE VIEW features AS SELECT {', '.join(FEATURE_METADATA)} FROM _features")
    con.register("_labels", labels_table(lake))
    con.execute("CREATE VIEW labels AS SELECT * FROM _labels")
    lock_down(con)
    return con


# Applied in this order: the spill directory must be cleared while it can still be changed (DuckDB
# allow-lists it for file access even with external access off), and the lock comes last.
LOCKDOWN = ("SET temp_directory = ''", "SET enable_external_access = false", "SET lock_configuration = true")


def lock_down(con) -> None:
    """No file, network or extension access from SQL on ``con`` from now on, and no way to undo that."""
    for statement in LOCKDOWN:
        con.execute(statement)


def single_select(con, sql: str) -> str:
    """``sql`` if it is exactly one SELECT statement (DESCRIBE/SHOW/SUMMARIZE parse as SELECT).

    Raises:
        ValueError: empty SQL, several statements, or a statement of another kind (named).
    """
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {exc}") from None
    if not statements:
        raise ValueError("query: empty SQL")
    if len(statements) > 1:
        raise ValueError(f"query: one statement per call, got {len(statements)} (remove the ';'-separated extra statements)")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ValueError(f"query: only read-only SELECT queries over the views {', '.join(VIEWS)} are allowed, got a {kind.name} statement")
    return sql


def query(lake: Lake | str, sql: str) -> pa.Table:
    """Run ``sql`` against the lake's views and return the result as an Arrow table.

    Raises:
        ValueError: the SQL is empty, is not exactly one SELECT, reaches outside the lake's views,
            or DuckDB rejects it (the message names the problem).
    """
    import duckdb

    if not sql or not sql.strip():
        raise ValueError("query: empty SQL")
    lake = Lake(lake) if isinstance(lake, str) else lake
    con = connect(lake)
    try:
        return _arrow(con.sql(single_select(con, sql)))
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {_name_bad_file(lake, str(exc))}") from None
    finally:
        con.close()


# pyarrow's message when a registered dataset meets a file that is not Parquet (truncated, junk).
_UNREADABLE = re.compile(r"Could not open Parquet input source '([^']+)'")


def _name_bad_file(lake: Lake, message: str) -> str:
    """DuckDB's error, led by the lake file it could not read (as a URI) and how to move it aside."""
    found = _UNREADABLE.search(message)
    if not found:
        return message
    path = found.group(1)
    uri = lake.uri_of(path if path.startswith(lake.root) else f"{lake.root}/{path.lstrip('/')}")
    return f"lake file {uri} is not a readable Parquet file{lake.quarantine_hint()} ({message})"


def _arrow(relation) -> pa.Table:
    out = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    return out.read_all() if isinstance(out, pa.RecordBatchReader) else out


# ----- output formats -------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def format_table(table: pa.Table, fmt: str = "table", max_rows: int | None = None) -> str:
    """Render a result as an aligned text table, CSV or JSON (one object per row, in a list)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    rows = table.to_pylist()
    if fmt == "json":
        return json.dumps(rows, default=str, indent=1)
    names = table.column_names
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[_cell(r[n]) for n in names] for r in rows])
        return buf.getvalue()
    shown = rows if max_rows is None else rows[:max_rows]
    cells = [[_cell(r[n]) for n in names] for r in shown]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    more = len(rows) - len(shown)
    lines.append(f"({len(rows)} rows{f', {more} not shown' if more else ''})")
    return "\n".join(lines)
