"""Filesystem resolution: the one function that turns a URI into an fsspec filesystem.

Local paths, ``file://``, ``memory://`` and ``s3://`` (s3fs) are supported, and any other
protocol fsspec knows (``gs://``, ``az://``, ``http://``) is passed through unchanged. S3
endpoint and credentials come from the storage config or the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION``), read at call time, so MinIO, Ceph and moto work unchanged.

Two S3 details matter for distributed jobs:

- The listing cache is off (``use_listings_cache=False``): an s3fs instance that once listed a
  prefix otherwise raises ``FileNotFoundError`` on a file another writer added later.
- Endpoint and credentials found in the environment are passed to s3fs *explicitly*, so they
  are part of the filesystem's pickled state: a Ray worker whose environment lacks the
  ``AWS_*`` variables (the cluster was started before they were set) still reaches the same
  store, and fsspec's instance cache never hands out a filesystem built for older variables.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import pyarrow.fs as pafs

S3_PROTOCOLS = ("s3", "s3a")


def protocol_of(uri: str) -> str:
    """Protocol of ``uri`` (``"file"`` for plain paths)."""
    return fsspec.core.split_protocol(str(uri))[0] or "file"


def storage_options(uri: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """fsspec options for ``uri``'s protocol.

    Args:
        uri: any URI or local path.
        endpoint_url: S3-compatible endpoint; overrides ``AWS_ENDPOINT_URL``.

    Returns:
        Keyword arguments for the filesystem (S3: endpoint, credentials, region, no listing cache;
        other protocols: none).
    """
    if protocol_of(uri) not in S3_PROTOCOLS:
        return {}
    env = os.environ
    opts: dict[str, Any] = {"use_listings_cache": False}  # another writer's new files must be visible
    endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    # Explicit credentials (when the environment has them) travel with the pickled filesystem;
    # without them s3fs/botocore falls back to its own chain (profile, IAM role, IRSA).
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        opts["key"] = env["AWS_ACCESS_KEY_ID"]
        opts["secret"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            opts["token"] = env["AWS_SESSION_TOKEN"]
    region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
    if region:
        opts["client_kwargs"] = {"region_name": region}
    return opts


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (where atomic writes use temp file + rename)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def resolve(uri: str, endpoint_url: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and protocol-less path for ``uri``.

    Args:
        uri: local path, ``file://``, ``memory://``, ``s3://bucket/prefix`` or another fsspec URL.
        endpoint_url: S3-compatible endpoint; overrides ``AWS_ENDPOINT_URL``.

    Returns:
        ``(fs, path)``; local paths are made absolute, trailing slashes removed.

    Raises:
        ValueError: the URI is empty or its protocol is unknown to fsspec.
    """
    uri = str(uri)
    if not uri.strip():
        raise ValueError("empty storage URI")
    try:
        fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri, endpoint_url))
    except (ValueError, ImportError) as exc:
        raise ValueError(f"cannot resolve storage URI {uri!r}: {exc}") from None
    if is_local(fs):
        path = os.path.abspath(path)
    return fs, path.rstrip("/") or "/"


def full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """URI (with protocol) of ``path`` on ``fs``; plain absolute paths for the local filesystem."""
    if is_local(fs):
        return path
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://{path.lstrip('/')}" if protocol != "memory" else f"memory://{path}"


def to_arrow_fs(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    """pyarrow view of an fsspec filesystem (for datasets, Ray Data and DuckDB registration)."""
    if is_local(fs):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
