"""Filesystem resolution: the one function that turns a URI into an fsspec filesystem.

Local paths, ``file://``, ``memory://`` and ``s3://`` (s3fs) are supported; S3 endpoint and
credentials come from the storage config or the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), read at call time,
so MinIO, Ceph and moto work unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import pyarrow.fs as pafs


def storage_options(uri: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """fsspec options for ``uri``'s protocol (S3: endpoint, credentials, no listing cache)."""
    protocol = fsspec.core.split_protocol(uri)[0] or "file"
    if protocol in ("s3", "s3a"):
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        opts: dict[str, Any] = {"use_listings_cache": False}  # another writer's new files must be visible
        if endpoint:
            opts["endpoint_url"] = endpoint
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        if region:
            opts["client_kwargs"] = {"region_name": region}
        return opts
    return {}


def resolve(uri: str, endpoint_url: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and protocol-less root path for ``uri``."""
    uri = str(uri)
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri, endpoint_url))
    if fs.protocol in ("file", ("file", "local")) or "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        path = os.path.abspath(path)
    return fs, path.rstrip("/")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def to_arrow_fs(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    """pyarrow view of an fsspec filesystem (for datasets, Ray Data and DuckDB registration)."""
    if is_local(fs):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
