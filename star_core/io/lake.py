"""The lake: one root URI, every path in it, and atomic Parquet reads and writes.

Layout (relative to the root; see docs/architecture.md)::

    features/<feature_set>/part-<digest>.parquet           one row per video
    labels/<dataset>/v<NNNN>/labels.parquet                 one row per video of a dataset version
    labels/<dataset>/v<NNNN>/dataset.json                   class list, digest, provenance
    detections/model=<name>-v<ver>/date=YYYY-MM-DD/part-<run>-<shard>.parquet
    manifests/<job>/<run_id>.parquet                         per-input status of a job run
    checkpoints/<run_name>/...                               Ray Train checkpoints
    mlflow.db, mlflow-artifacts/                              embedded MLflow (local lakes only)
    quarantine/<original path>                               files moved aside by `star lake check --quarantine`

This module is the only code that puts lake paths together. Writes are atomic: a local file
is written under a temporary name and renamed; an object store receives a single put, which
becomes visible only when complete. Names are deterministic in their inputs so retries and
reruns overwrite rather than duplicate.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from star_core.io import fs as fsmod
from star_core.io.atomic import TMP_PREFIX, write_bytes_atomic
from star_core.io.inputs import video_id_from_uri  # noqa: F401  (re-export: the one naming rule lives with input listing)
from star_core.io.schemas import SCHEMA_NAME_KEY, SchemaError, check_schema

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-=]*$")


def check_name(kind: str, name: str) -> str:
    """Names that become path components: letters, digits, '.', '_', '-', '='."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_', '-'")
    return name


@dataclass
class Lake:
    """A lake rooted at ``uri`` (local path, ``file://``, ``memory://`` or ``s3://bucket/prefix``)."""

    uri: str
    endpoint_url: str | None = None
    fs: fsspec.AbstractFileSystem = field(init=False, repr=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.uri = str(self.uri).rstrip("/")
        self.fs, self.root = fsmod.resolve(self.uri, self.endpoint_url)
        if self.is_local:
            # Absolute, so that processes with another working directory (Ray workers and
            # actors, Prefect's process worker) open the same lake as the driver.
            self.uri = self.root

    # ----- paths -------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return fsmod.is_local(self.fs)

    def path(self, *parts: str) -> str:
        """Filesystem path (no protocol) of a lake-relative location."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def url(self, *parts: str) -> str:
        """Full URI (with protocol) of a lake-relative location."""
        return fsmod.full_url(self.fs, self.path(*parts))

    def uri_of(self, path: str) -> str:
        """The URI (with protocol, as users write it) of a filesystem path of this lake (from :meth:`path`)."""
        return fsmod.full_url(self.fs, path)

    def features_dir(self, feature_set: str) -> str:
        return self.path("features", check_name("feature set", feature_set))

    def labels_dir(self, dataset: str, version: int | None = None) -> str:
        base = self.path("labels", check_name("dataset", dataset))
        return base if version is None else f"{base}/v{int(version):04d}"

    def detections_dir(self, model_name: str, model_version: str | int | None = None, date: str | None = None) -> str:
        base = self.path("detections")
        if model_version is None:
            return base
        part = f"{base}/model={check_name('model', model_name)}-v{model_version}"
        return part if date is None else f"{part}/date={check_name('date', date)}"

    def manifest_path(self, job: str, run_id: str) -> str:
        return self.path("manifests", check_name("job", job), f"{check_name('run id', run_id)}.parquet")

    def checkpoints_dir(self, run_name: str) -> str:
        return self.path("checkpoints", check_name("run name", run_name))

    def mlflow_db_path(self) -> str:
        return self.path("mlflow.db")

    # ----- primitive I/O ---------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def list_files(self, directory: str, suffix: str = ".parquet") -> list[str]:
        """Files under ``directory`` (recursive) ending in ``suffix``, sorted.

        Temporary files of in-flight writes (``_tmp-*``) and hidden files are never listed, and
        the filesystem's listing cache is dropped first, so files that another process wrote
        since this process last listed are seen (the s3fs pitfall).
        """
        self.fs.invalidate_cache(directory)
        if not self.fs.exists(directory):
            return []
        found = self.fs.find(directory)
        return sorted(p for p in found if p.endswith(suffix) and not _is_hidden(p[len(directory):]))

    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomically write ``data`` to ``path``, replacing any previous version (:mod:`star_core.io.atomic`)."""
        if _is_hidden(path.rsplit("/", 1)[-1]):
            raise ValueError(f"{self.uri_of(path)}: lake file names may not start with '_tmp-' or '.'")
        write_bytes_atomic(self.fs, path, bytes(data))

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def write_json(self, path: str, obj: Any) -> None:
        """Atomically write ``obj`` as indented, key-sorted JSON."""
        self.write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def write_table(self, path: str, table: pa.Table, schema: pa.Schema | None = None) -> None:
        """Atomically write one Parquet file, cast to ``schema`` (which stamps its version)."""
        if schema is not None:
            table = conform(table, schema, where=path)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(path, buf.getvalue())

    def read_table(self, path: str, schema: pa.Schema | None = None, columns: list[str] | None = None) -> pa.Table:
        """Read one Parquet file, checking its schema name, version and columns when ``schema`` is given.

        Raises:
            FileNotFoundError: no file at ``path``.
            SchemaError: not a Parquet file, damaged data, or written with another schema (names the file;
                for damaged or foreign files, points to ``star lake check --quarantine``).
        """
        with self.fs.open(path, "rb") as fh:
            try:
                pf = pq.ParquetFile(fh)
            except pa.ArrowInvalid as exc:
                raise SchemaError(f"{self.uri_of(path)}: not a readable Parquet file ({exc}){self.quarantine_hint()}") from None
            if schema is not None:
                try:
                    check_schema(pf.schema_arrow, schema, where=self.uri_of(path))
                except SchemaError as exc:
                    # A file of another table (junk copied in) blocks readers like a damaged one; a file
                    # of the same table at another schema version is not damage, so no quarantine advice.
                    name = schema.metadata[SCHEMA_NAME_KEY]
                    foreign = (pf.schema_arrow.metadata or {}).get(SCHEMA_NAME_KEY) != name
                    raise SchemaError(f"{exc}{self.quarantine_hint() if foreign else ''}") from None
            try:
                return pf.read(columns=columns)
            except (FileNotFoundError, PermissionError):
                raise
            except (pa.ArrowInvalid, OSError) as exc:  # pyarrow raises OSError for a damaged page header
                raise SchemaError(f"{self.uri_of(path)}: cannot read its Parquet data ({exc}){self.quarantine_hint()}") from None

    def quarantine_hint(self) -> str:
        """Advice appended to the error of a reader that met an unreadable lake file."""
        return f"; to find unreadable lake files and move them aside run `star lake check --lake {self.uri} --quarantine`"

    def read_tables(self, paths: Iterable[str], schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
        tables = [self.read_table(p, schema, columns) for p in paths]
        if not tables:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        return pa.concat_tables(tables)

    def delete(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)



def _is_hidden(relative: str) -> bool:
    """A temporary (``_tmp-``) or hidden (``.``) component anywhere in a relative path."""
    return any(part.startswith((TMP_PREFIX, ".")) for part in relative.split("/") if part)


def conform(table: pa.Table, schema: pa.Schema, where: str = "table") -> pa.Table:
    """Select and cast ``table``'s columns to ``schema`` (adding null columns for nullable fields)."""
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            try:
                col = col.cast(f.type) if col.type != f.type else col
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{where}: column {f.name!r} cannot be cast to {f.type}: {exc}") from None
            if not f.nullable and col.null_count:
                raise SchemaError(f"{where}: column {f.name!r} has {col.null_count} nulls")
            arrays.append(col)
        elif f.nullable:
            arrays.append(pa.nulls(table.num_rows, f.type))
        else:
            raise SchemaError(f"{where}: required column {f.name!r} is missing")
    return pa.Table.from_arrays(arrays, schema=schema)

