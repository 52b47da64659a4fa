"""Listing input videos (files, prefixes, globs, @list files) and naming them."""

from __future__ import annotations

import pytest

from star_core.io.inputs import list_inputs, video_id_from_uri
from star_core.io.lake import Lake


@pytest.mark.parametrize(
    "uri, video_id",
    [
        ("s3://archive/2026/video_test_0000004.mp4", "video_test_0000004"),
        ("/data/a.b.avi", "a.b"),
        ("file:///data/x.mkv", "x"),
        ("https://host/v/clip.webm?sig=abc#t=3", "clip"),
        ("memory:///m/noext", "noext"),
    ],
)
def test_video_id_is_the_base_name_without_extension(uri, video_id):
    assert video_id_from_uri(uri) == video_id


def test_video_id_needs_a_file_name():
    with pytest.raises(ValueError, match="cannot derive a video id"):
        video_id_from_uri("s3://bucket/")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def archive(request, tmp_path) -> Lake:
    """An 'archive' with videos in nested folders plus non-video files."""
    uri = str(tmp_path / "archive") if request.param == "local" else request.getfixturevalue("s3_lake_uri")
    lake = Lake(uri)
    for name in ["cam1/a.mp4", "cam1/b.AVI", "cam2/c.mkv", "cam2/readme.txt", "d.mp4"]:
        lake.write_bytes(lake.path(name), b"not really a video")
    return lake


def test_prefixes_globs_files_and_list_files(archive):
    url = archive.url
    assert list_inputs(url()) == [url("cam1/a.mp4"), url("cam1/b.AVI"), url("cam2/c.mkv"), url("d.mp4")]
    assert list_inputs(url("cam1") + "/") == [url("cam1/a.mp4"), url("cam1/b.AVI")]
    assert list_inputs(url("cam*/*.mp4")) == [url("cam1/a.mp4")]
    assert list_inputs([url("cam2/readme.txt")]) == [url("cam2/readme.txt")]  # an explicit file is taken as is
    assert list_inputs([url("d.mp4"), url("cam2"), url("d.mp4")]) == [url("cam2/c.mkv"), url("d.mp4")]
    archive.write_bytes(archive.path("batch.txt"), f"# nightly batch\n\ncam1/a.mp4\n{url('cam2')}\n".encode())
    assert list_inputs("@" + url("batch.txt")) == [url("cam1/a.mp4"), url("cam2/c.mkv")]


def test_list_file_entries_are_relative_to_the_list(tmp_path):
    (tmp_path / "v").mkdir()
    for n in ("a.mp4", "b.mp4"):
        (tmp_path / "v" / n).write_bytes(b"x")
    (tmp_path / "list.txt").write_text(f"# two videos\nv/a.mp4\n\n{tmp_path}/v/b.mp4\n")
    assert list_inputs(f"@{tmp_path}/list.txt") == [f"{tmp_path}/v/a.mp4", f"{tmp_path}/v/b.mp4"]
    (tmp_path / "nested.txt").write_text("@list.txt\n")
    with pytest.raises(ValueError, match="nested list files are not supported"):
        list_inputs(f"@{tmp_path}/nested.txt")
    with pytest.raises(FileNotFoundError, match="list file .*missing.txt' does not exist"):
        list_inputs(f"@{tmp_path}/missing.txt")


def test_bad_inputs_are_clear_errors(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "same.mp4").write_bytes(b"1")
    (tmp_path / "y" / "same.avi").write_bytes(b"2")
    with pytest.raises(ValueError, match="both have video id 'same'"):
        list_inputs(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(str(tmp_path / "nope.mp4"))
    with pytest.raises(FileNotFoundError, match="the glob matches no video files"):
        list_inputs(str(tmp_path / "*.webm"))
    with pytest.raises(ValueError, match="no inputs given"):
        list_inputs([])


def test_resolve_inputs_returns_missing_inputs_with_their_reason(tmp_path):
    from star_core.io.inputs import resolve_inputs

    (tmp_path / "a.mp4").write_bytes(b"1")
    got = resolve_inputs([str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), str(tmp_path / "*.mkv"), f"@{tmp_path}/none.txt"])
    assert got.uris == [str(tmp_path / "a.mp4")] or got.uris[0].endswith("/a.mp4")
    assert [m[0] for m in got.missing] == [str(tmp_path / "b.mp4"), str(tmp_path / "*.mkv"), f"@{tmp_path}/none.txt"]
    assert all(reason.startswith("MissingInputError: ") for _, reason in got.missing)
    assert "does not exist" in got.missing[0][1] and "matches no video files" in got.missing[1][1]
