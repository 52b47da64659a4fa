"""Datasets (star_core.io.datasets) on every backend: versioned by content, checked on save."""

from __future__ import annotations

import pytest

from star_core.data import Instance, VideoLabels
from star_core.io import datasets


def _labels(extra: str = "") -> list[VideoLabels]:
    return [
        VideoLabels("v1", "train", ("Run", "Jump"), (2, 1), duration_s=10.0),
        VideoLabels(
            "v2",
            "test",
            ("Jump",),
            None,
            instances=(Instance("Jump", 1.0, 2.5),),
            ambiguous=((4.0, 5.0),),
            duration_s=8.0,
            source_uri="s3://a/v2.mp4" + extra,
        ),
    ]


def test_datasets_are_versioned_by_content(lake):
    classes = ["Jump", "Run"]
    assert datasets.save_dataset(lake, "toy", classes, _labels(), source={"from": "test"}) == (1, True)
    assert datasets.save_dataset(lake, "toy", classes, list(reversed(_labels()))) == (1, False)  # same content
    assert datasets.save_dataset(lake, "toy", classes, _labels("?changed")) == (2, True)
    assert datasets.save_dataset(lake, "toy", ["Run", "Jump"], _labels("?changed")) == (3, True)  # class order matters
    latest = datasets.load_dataset(lake, "toy")
    assert (latest.version, latest.classes) == (3, ("Run", "Jump"))
    first = datasets.load_dataset(lake, "toy", 1)
    assert first.videos == _labels()
    assert [d["version"] for d in datasets.list_datasets(lake)] == [1, 2, 3]
    with pytest.raises(KeyError, match=r"has no version 7 \(versions: \[1, 2, 3\]\)"):
        datasets.load_dataset(lake, "toy", 7)
    with pytest.raises(KeyError, match="no dataset named 'nope'"):
        datasets.load_dataset(lake, "nope")


def test_bad_datasets_are_rejected(lake):
    with pytest.raises(ValueError, match="duplicate video 'v1'"):
        datasets.save_dataset(lake, "toy", ["Jump", "Run"], _labels() + [_labels()[0]])
    with pytest.raises(ValueError, match=r"video 'v1' has labels \['Run'\] not in the class list"):
        datasets.save_dataset(lake, "toy", ["Jump"], _labels())
    assert datasets.list_datasets(lake) == []


def test_dataset_source_and_its_split_protocol(lake):
    protocol = {"train_split": "train", "test_split": "test", "exclude_videos": ["v2"], "ignore_ambiguous": True}
    datasets.save_dataset(lake, "toy", ["Jump", "Run"], _labels(), source={"feature_set": "fs", "protocol": protocol})
    datasets.save_dataset(lake, "toy", ["Jump", "Run"], _labels("?v2"))  # no source recorded
    assert datasets.dataset_source(lake, "toy", 1)["feature_set"] == "fs"
    assert datasets.dataset_source(lake, "toy") == {}  # the latest version
    assert datasets.SplitProtocol.of(datasets.dataset_source(lake, "toy", 1)) == datasets.SplitProtocol("train", "test", ("v2",))
    assert datasets.SplitProtocol.of({}) == datasets.SplitProtocol()  # train on train, test on test, exclude nothing
    with pytest.raises(KeyError, match=r"dataset 'toy' has no version 3 \(versions: \[1, 2\]\)"):
        datasets.dataset_source(lake, "toy", 3)
    with pytest.raises(KeyError, match="no dataset named 'nope'"):
        datasets.dataset_source(lake, "nope")
