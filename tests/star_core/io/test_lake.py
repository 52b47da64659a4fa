"""The lake on memory://, a local directory and S3 (moto): paths, atomic writes, listing, credentials."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from star_core.io import fs as fsmod
from star_core.io import schemas
from star_core.io.lake import Lake, check_name
from star_core.io.schemas import SchemaError

REPO = Path(__file__).resolve().parents[3]


def _manifest(n_rows: int, run_id: str = "r1") -> pa.Table:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = [
        {
            "job": "extract",
            "run_id": run_id,
            "input": f"v{i}.mp4",
            "status": "done",
            "reason": "x" * 50,
            "duration_s": float(i),
            "finished_at": now,
        }
        for i in range(n_rows)
    ]
    return pa.Table.from_pylist(rows, schema=schemas.MANIFEST)


# ----- paths -------------------------------------------------------------------------------------
def test_paths_are_built_in_one_place(tmp_path):
    lake = Lake(str(tmp_path / "lake") + "/")
    root = str(tmp_path / "lake")
    assert lake.root == root and lake.uri == root
    assert lake.features_dir("i3d-tvl1") == f"{root}/features/i3d-tvl1"
    assert lake.labels_dir("thumos14", 3) == f"{root}/labels/thumos14/v0003"
    assert lake.detections_dir("star", 2, "2026-11-28") == f"{root}/detections/model=star-v2/date=2026-11-28"
    assert (
        lake.manifest_path("extract", "extract-20261128T000000-abc123")
        == f"{root}/manifests/extract/extract-20261128T000000-abc123.parquet"
    )
    s3 = Lake("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:1")
    assert s3.root == "bucket/some/prefix" and s3.url("features", "x") == "s3://bucket/some/prefix/features/x"
    mem = Lake("memory://m1")
    assert mem.url("a") == "memory:///m1/a"
    # the one path -> URI rule: a filesystem path of the lake back to the URI users write
    assert s3.uri_of(s3.detections_dir("star", 2)) == "s3://bucket/some/prefix/detections/model=star-v2"
    assert mem.uri_of(mem.path("a", "b")) == mem.url("a", "b") == "memory:///m1/a/b"
    assert lake.uri_of(lake.features_dir("x")) == f"{root}/features/x"


def test_a_relative_local_lake_is_the_same_lake_from_another_working_directory(tmp_path, monkeypatch):
    # `star demo` defaults to ./star-lake; Ray workers and Prefect's process worker run in other
    # directories, so the URI a job hands them must name the same directory.
    monkeypatch.chdir(tmp_path)
    lake = Lake("./star-lake")
    assert lake.uri == str(tmp_path / "star-lake") and Path(lake.uri).is_absolute()
    lake.write_table(lake.path("manifests", "m.parquet"), _manifest(2), schemas.MANIFEST)
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Lake(lake.uri).read_table(lake.path("manifests", "m.parquet")).num_rows == 2
    assert not (elsewhere / "star-lake").exists()


@pytest.mark.parametrize("bad", ["", "../up", "a/b", ".hidden", "a b", "x..y"])
def test_unsafe_names_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="invalid feature set name"):
        Lake(tmp_path).features_dir(bad)
    with pytest.raises(ValueError, match="invalid"):
        check_name("run id", bad)


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot resolve storage URI 'nosuchproto://x'"):
        Lake("nosuchproto://x")


# ----- round trips on every backend ----------------------------------------------------------
def test_bytes_json_and_tables_round_trip(lake):
    p = lake.path("misc", "blob.bin")
    lake.write_bytes(p, b"one")
    lake.write_bytes(p, b"two")  # overwrite
    assert lake.read_bytes(p) == b"two"
    lake.write_json(lake.path("misc", "meta.json"), {"b": 1, "a": [1, 2]})
    assert lake.read_json(lake.path("misc", "meta.json")) == {"a": [1, 2], "b": 1}
    path = lake.manifest_path("extract", "r1")
    lake.write_table(path, _manifest(5), schemas.MANIFEST)
    back = lake.read_table(path, schemas.MANIFEST)
    assert back.num_rows == 5 and back.column("input").to_pylist()[4] == "v4.mp4"
    assert lake.read_table(path, schemas.MANIFEST, columns=["input"]).column_names == ["input"]
    both = lake.read_tables([path, path], schemas.MANIFEST)
    assert both.num_rows == 10
    assert lake.read_tables([], schemas.MANIFEST).num_rows == 0


def test_list_files_is_sorted_filtered_and_recursive(lake):
    for name in ["b.parquet", "a.parquet", "sub/c.parquet", "note.json"]:
        lake.write_bytes(lake.path("d", name), b"x")
    assert lake.list_files(lake.path("d")) == [lake.path("d", n) for n in ["a.parquet", "b.parquet", "sub/c.parquet"]]
    assert lake.list_files(lake.path("d"), suffix=".json") == [lake.path("d", "note.json")]
    assert lake.list_files(lake.path("nothing-here")) == []


def test_missing_and_corrupt_files_are_clear_errors(lake):
    with pytest.raises(FileNotFoundError):
        lake.read_table(lake.path("none.parquet"), schemas.MANIFEST)
    bad = lake.path("features", "fs1", "part-bad.parquet")
    lake.write_bytes(bad, b"this is not parquet")
    with pytest.raises(SchemaError, match=r"part-bad.parquet: not a readable Parquet file"):
        lake.read_table(bad, schemas.FEATURES)


def test_reserved_file_names_cannot_be_written(lake):
    with pytest.raises(ValueError, match="may not start with '_tmp-'"):
        lake.write_bytes(lake.path("d", "_tmp-123"), b"x")


def test_arrow_filesystem_reads_the_lake(lake):
    for run in ("r1", "r2"):
        lake.write_table(lake.manifest_path("extract", run), _manifest(3, run), schemas.MANIFEST)
    ds = pads.dataset(lake.path("manifests", "extract"), format="parquet", filesystem=fsmod.to_arrow_fs(lake.fs))
    assert sorted(ds.to_table().column("run_id").to_pylist()) == ["r1"] * 3 + ["r2"] * 3


# ----- atomicity -----------------------------------------------------------------------------
def test_readers_never_see_partial_or_temporary_files(lake):
    """A reader that lists and reads while a writer rewrites files only ever sees complete tables."""
    directory = lake.path("manifests", "extract")
    n_rows = 20_000  # a few hundred KB per file: writes take long enough to overlap with reads
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[str] = set()

    def writer():
        try:
            for i in range(12):
                lake.write_table(f"{directory}/run-{i % 3}.parquet", _manifest(n_rows, f"run-{i % 3}"), schemas.MANIFEST)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader():
        try:
            while not stop.is_set():
                for path in lake.list_files(directory):
                    seen.add(path.rsplit("/", 1)[-1])
                    assert lake.read_table(path, schemas.MANIFEST).num_rows == n_rows
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert seen <= {"run-0.parquet", "run-1.parquet", "run-2.parquet"}
    assert lake.list_files(directory) == [f"{directory}/run-{i}.parquet" for i in range(3)]
    assert [p for p in lake.fs.find(directory) if "_tmp-" in p] == []


def test_a_rejected_table_writes_nothing(lake):
    path = lake.manifest_path("extract", "bad")
    with pytest.raises(SchemaError):
        lake.write_table(path, _manifest(2).drop_columns(["status"]), schemas.MANIFEST)
    assert not lake.exists(path)
    assert lake.list_files(lake.path("manifests")) == []


def test_a_failed_local_write_leaves_no_temporary_file(tmp_path):
    lake = Lake(tmp_path / "lake")
    target = lake.path("d", "x.parquet")
    os.makedirs(target)  # rename onto a non-empty directory fails after the data was written
    (Path(target) / "keep").write_text("occupied")
    with pytest.raises(OSError):
        lake.write_bytes(target, b"payload")
    assert sorted(os.listdir(lake.path("d"))) == ["x.parquet"]  # no _tmp-* left behind


def test_rewrite_replaces_the_previous_version_in_place(lake):
    path = lake.manifest_path("extract", "r1")
    lake.write_table(path, _manifest(3), schemas.MANIFEST)
    lake.write_table(path, _manifest(4), schemas.MANIFEST)
    assert lake.list_files(lake.path("manifests")) == [path]
    assert lake.read_table(path, schemas.MANIFEST).num_rows == 4


# ----- S3 specifics --------------------------------------------------------------------------
def test_storage_options_read_aws_variables_at_call_time(monkeypatch):
    for k in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
    ):
        monkeypatch.delenv(k, raising=False)
    assert fsmod.storage_options("s3://b/p") == {"use_listings_cache": False}
    assert fsmod.storage_options("/local/path") == {} and fsmod.storage_options("memory://x") == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    opts = fsmod.storage_options("s3://b/p")
    assert opts == {
        "use_listings_cache": False,
        "endpoint_url": "http://minio:9000",
        "key": "ak",
        "secret": "sk",
        "token": "tok",
        "client_kwargs": {"region_name": "eu-west-3"},
    }
    assert fsmod.storage_options("s3://b/p", endpoint_url="http://ceph:7480")["endpoint_url"] == "http://ceph:7480"
    fs, path = fsmod.resolve("s3://b/p/")
    assert path == "b/p" and fs.endpoint_url == "http://minio:9000" and fs.key == "ak"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://other:9000")
    fs2, _ = fsmod.resolve("s3://b/p")
    assert fs2.endpoint_url == "http://other:9000"  # not a stale cached instance


@pytest.mark.slow
def test_s3_lake_works_from_a_process_without_aws_variables(s3_lake_uri, tmp_path):
    """A pickled lake (what Ray ships to workers) carries endpoint and credentials with it."""
    lake = Lake(s3_lake_uri)
    path = lake.manifest_path("extract", "r1")
    lake.write_table(path, _manifest(2), schemas.MANIFEST)
    blob = tmp_path / "lake.pkl"
    blob.write_bytes(pickle.dumps(lake))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    code = (
        "import pickle, sys; from star_core.io import schemas; "
        f"lake = pickle.load(open({str(blob)!r}, 'rb')); "
        "t = lake.read_table(lake.manifest_path('extract', 'r1'), schemas.MANIFEST); "
        "lake.write_bytes(lake.path('from-child.txt'), b'hi'); print(t.num_rows)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "2"
    assert lake.read_bytes(lake.path("from-child.txt")) == b"hi"


@pytest.mark.slow
def test_files_added_by_another_writer_are_seen(s3_lake_uri, s3):
    """The s3fs listing-cache pitfall: a listed prefix must not hide files written later by others."""
    lake = Lake(s3_lake_uri)
    directory = lake.path("manifests", "extract")
    lake.write_table(f"{directory}/r1.parquet", _manifest(1), schemas.MANIFEST)
    assert lake.list_files(directory) == [f"{directory}/r1.parquet"]
    lake.fs.ls(directory)  # populate any listing cache the filesystem keeps
    # Another process writes through its own client (not through this filesystem instance).
    buf = pa.BufferOutputStream()
    pq.write_table(_manifest(2, "r2"), buf)
    bucket, key = f"{directory}/r2.parquet".split("/", 1)
    boto3.client("s3", endpoint_url=s3).put_object(Bucket=bucket, Key=key, Body=buf.getvalue().to_pybytes())
    assert lake.list_files(directory) == [f"{directory}/r1.parquet", f"{directory}/r2.parquet"]
    assert lake.exists(f"{directory}/r2.parquet")
    assert lake.read_table(f"{directory}/r2.parquet", schemas.MANIFEST).num_rows == 2
    # Same with a filesystem that *does* cache listings (e.g. one a user built): list_files drops the cache.
    import s3fs

    cached = Lake(s3_lake_uri)
    cached.fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    assert len(cached.list_files(directory)) == 2
    boto3.client("s3", endpoint_url=s3).put_object(Bucket=bucket, Key=key.replace("r2", "r3"), Body=buf.getvalue().to_pybytes())
    assert len(cached.list_files(directory)) == 3
