"""Input videos of a job: listing them on any fsspec URL, and the one rule that names them.

An input is one of

- a single file (``s3://archive/2026/cam1.mp4``, ``/data/a.avi``): taken whatever its extension;
- a directory or prefix (``s3://archive/2026/``): every video file under it, recursively;
- a glob (``s3://archive/*/cam1-*.mp4``): the matching video files;
- a list file, written ``@path`` (``@/data/videos.txt``, ``@s3://archive/list.txt``): one input
  per line (files, prefixes or globs; blank lines and ``#`` comments ignored; relative entries are
  relative to the list file's directory).

Video files are recognised by extension (:data:`VIDEO_EXTENSIONS`) when a prefix or glob is
expanded. :func:`video_id_from_uri` is the only place that turns an input into a video id.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, Sequence

from star_core.io import fs as fsmod

DEFAULT_MAX_IN_MEMORY_BYTES = 1 << 30  # remote videos up to 1 GiB are fetched in one request
REMOTE_BLOCK_BYTES = 16 << 20  # block size of the cached reader for larger remote videos
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".ts", ".3gp")
_GLOB_CHARS = "*?["
# Manifest reason of an input a run did not finish because it was interrupted (status "skipped").
INTERRUPTED_REASON = "interrupted before it finished (SIGINT); a rerun processes it"


def video_id_from_uri(uri: str) -> str:
    """The video id of an input: its base name without the last extension.

    ``s3://archive/2026/video_test_0000004.mp4`` → ``video_test_0000004``;
    ``/data/a.b.avi`` → ``a.b``; query strings and fragments of HTTP URLs are ignored. The id
    is what labels, features and detections join on, so two inputs with the same base name
    in different directories are ambiguous (:func:`list_inputs` rejects them).

    Raises:
        ValueError: the URI has no base name.
    """
    path = str(uri).split("?", 1)[0].split("#", 1)[0]  # a trailing "/" names a directory: no id
    base = posixpath.basename(path.replace("\\", "/"))
    stem, ext = os.path.splitext(base)
    video_id = stem if ext else base
    if not video_id or video_id in (".", ".."):
        raise ValueError(f"input {uri!r}: cannot derive a video id (no file name)")
    return video_id


def _is_video(path: str, extensions: Sequence[str]) -> bool:
    return path.lower().endswith(tuple(e.lower() for e in extensions))


def _read_list_file(uri: str) -> list[str]:
    fs, path = fsmod.resolve(uri)
    if not fs.isfile(path):
        raise FileNotFoundError(f"list file {uri!r} does not exist")
    base_url = fsmod.full_url(fs, path.rsplit("/", 1)[0])
    entries = []
    for line in fs.cat_file(path).decode().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            raise ValueError(f"list file {uri!r}: nested list files are not supported ({line!r})")
        has_protocol = "://" in line
        entries.append(line if has_protocol or line.startswith("/") else f"{base_url}/{line}")
    return entries


def _expand(item: str, extensions: Sequence[str]) -> list[str]:
    fs, path = fsmod.resolve(item)
    fs.invalidate_cache()  # new videos written by others since this process last listed
    if any(c in path for c in _GLOB_CHARS):
        matches = [p for p in fs.glob(path) if _is_video(p, extensions) and not fs.isdir(p)]
        if not matches:
            raise FileNotFoundError(f"input {item!r}: the glob matches no video files ({', '.join(extensions[:4])}, ...)")
        return [fsmod.full_url(fs, p) for p in matches]
    if fs.isfile(path):
        return [fsmod.full_url(fs, path)]
    if fs.isdir(path):
        return [fsmod.full_url(fs, p) for p in fs.find(path) if _is_video(p, extensions)]
    raise FileNotFoundError(f"input {item!r} does not exist (not a file, directory/prefix or glob match)")


@dataclass(frozen=True)
class ResolvedInputs:
    """The video URIs the inputs name, and the inputs that name nothing (with the reason)."""

    uris: list[str]  # sorted, distinct video URIs (with protocol; local paths absolute)
    missing: list[tuple[str, str]]  # (input as given, "MissingInputError: ...") for each input that does not exist


def resolve_inputs(inputs: str | Iterable[str], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> ResolvedInputs:
    """Like :func:`list_inputs`, but an input that does not exist (a missing file, prefix or list
    file, a glob matching nothing) is returned in ``missing`` instead of raised: jobs record it as
    a failed input of the run and go on with the others.

    Raises:
        ValueError: no inputs, or two different inputs map to the same video id.
    """
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    if not items:
        raise ValueError("no inputs given")
    found: list[str] = []
    missing: list[tuple[str, str]] = []

    def expand(entry: str) -> None:
        try:
            found.extend(_expand(entry, extensions))
        except FileNotFoundError as err:
            missing.append((entry, f"MissingInputError: {err}"))

    for item in items:
        item = str(item).strip()
        if item.startswith("@"):
            try:
                entries = _read_list_file(item[1:])
            except FileNotFoundError as err:
                missing.append((item, f"MissingInputError: {err}"))
                continue
            for entry in entries:
                expand(entry)
        else:
            expand(item)
    return ResolvedInputs(_distinct_ids(found), missing)


def list_inputs(inputs: str | Iterable[str], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[str]:
    """Expand inputs (files, prefixes, globs, ``@list`` files) into sorted, distinct video URIs.

    Args:
        inputs: one input or several (see the module docstring).
        extensions: file extensions that count as videos when a prefix or glob is expanded.

    Returns:
        Video URIs (with protocol; local paths absolute), sorted, each once.

    Raises:
        FileNotFoundError: an input does not exist, or a glob matches nothing.
        ValueError: two different inputs map to the same video id (:func:`video_id_from_uri`).
    """
    resolved = resolve_inputs(inputs, extensions)
    if resolved.missing:
        raise FileNotFoundError(resolved.missing[0][1].removeprefix("MissingInputError: "))
    return resolved.uris


def _distinct_ids(found: list[str]) -> list[str]:
    uris = sorted(set(found))
    by_id: dict[str, str] = {}
    for uri in uris:
        vid = video_id_from_uri(uri)
        if vid in by_id:
            raise ValueError(f"inputs {by_id[vid]!r} and {uri!r} both have video id {vid!r}; rename one or extract them separately")
        by_id[vid] = uri
    return uris


@contextlib.contextmanager
def open_video(uri: str, max_in_memory_bytes: int = DEFAULT_MAX_IN_MEMORY_BYTES) -> Iterator[str | bytes | BinaryIO]:
    """A video source for the decoder, read from storage once.

    Local files are yielded as their path (the decoder reads them directly). A remote video up
    to ``max_in_memory_bytes`` is fetched whole in one request and yielded as ``bytes``; a
    larger one as a seekable file whose blocks are cached, so the decoder's seeks (e.g. to an
    MP4 index at the end) do not fetch a block twice.

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    fs, path = fsmod.resolve(uri)
    if fsmod.is_local(fs):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"video {uri!r} does not exist")
        yield path
        return
    try:
        size = fs.size(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"video {uri!r} does not exist") from None
    if size is not None and size <= max_in_memory_bytes:
        yield fs.cat_file(path)
        return
    with fs.open(path, "rb", cache_type="blockcache", block_size=REMOTE_BLOCK_BYTES) as fh:
        yield fh
